#!/usr/bin/env bash
# packaging/check-layers.sh [yocto|buildroot|update-modules]...: checks the
# Yocto layer (yocto/meta-tether) and the Buildroot package
# (packaging/buildroot) with the upstream snapshots in ../shared/upstream, the
# way those projects' maintainers do, offline but for the Go module proxy.
#
#   yocto           bitbake -p (no error, no warning), show-recipes, -e, and
#                   -c fetch / -c unpack of tether with every gomod:// checksum
#   buildroot       utils/check-package on the tree, printvars, tether-show-info,
#                   and the package download checked against tether.hash
#   update-modules  regenerate tether-go-mods.inc and tether-licenses.inc with
#                   go-mod-update-modules.bbclass's own task (make yocto-update-modules)
#   buildroot-hash  recompute packaging/buildroot/package/tether/tether.hash (make buildroot-hash)
#
# With no argument: yocto and buildroot. bitbake refuses root, so as root the
# checks run as the unprivileged user $LAYERS_USER (created when missing).
# Everything lives under $LAYERS_CACHE (upstream trees, downloads, bitbake's
# parse cache), so a second run is fast; an empty cache works too.
set -euo pipefail

ROOTDIR=$(cd "$(dirname "$0")/.." && pwd)
UPSTREAM=${UPSTREAM:-$ROOTDIR/../shared/upstream}
LAYERS_CACHE=${LAYERS_CACHE:-/var/cache/tether-layers}
LAYERS_USER=${LAYERS_USER:-tetherbuild}
OE_TAR=openembedded-core-wrynose.tar.gz
BB_TAR=bitbake-2.18.tar.gz
BR_TAR=buildroot-2026.05.1.tar.gz

say() { printf 'check-layers: %s\n' "$*" >&2; }
die() { say "FAIL: $*"; exit 1; }

[ $# -gt 0 ] || set -- yocto buildroot
for f in $OE_TAR $BB_TAR $BR_TAR; do
	[ -f "$UPSTREAM/$f" ] || die "$UPSTREAM/$f is missing: the upstream snapshots live in ../shared/upstream (see its README.md); set UPSTREAM=DIR"
done

# Host tools: bitbake's sanity check and Buildroot's check-package.
host_deps() {
	"$ROOTDIR/softhsm-test/deps.sh" --layers || die "the host tools above are missing"
	if ! locale -a 2>/dev/null | grep -qi '^en_US\.utf-\?8$'; then
		[ "$(id -u)" -eq 0 ] || die "bitbake needs the en_US.UTF-8 locale; enable it in /etc/locale.gen and run locale-gen"
		sed -i 's/^# *\(en_US.UTF-8 UTF-8\)/\1/' /etc/locale.gen
		grep -q '^en_US.UTF-8 UTF-8' /etc/locale.gen || echo 'en_US.UTF-8 UTF-8' >>/etc/locale.gen
		locale-gen >/dev/null
	fi
}

# The unprivileged account bitbake runs as, and the cache it owns.
setup_user() {
	if [ "$(id -u)" -eq 0 ]; then
		id "$LAYERS_USER" >/dev/null 2>&1 ||
			useradd --system --create-home --home-dir "/var/lib/$LAYERS_USER" --shell /bin/bash "$LAYERS_USER"
		mkdir -p "$LAYERS_CACHE"
		chown "$LAYERS_USER:" "$LAYERS_CACHE"
	else
		LAYERS_USER=$(id -un)
		mkdir -p "$LAYERS_CACHE"
	fi
}

# as CMD...: runs CMD as the unprivileged user with a clean environment.
as() {
	local envs=(HOME="$(getent passwd "$LAYERS_USER" | cut -d: -f6)" LANG=en_US.UTF-8 LC_ALL=en_US.UTF-8
		PATH="$(dirname "$(command -v go)"):/usr/local/bin:/usr/bin:/bin"
		GOPROXY="$(go env GOPROXY)" GOFLAGS=-buildvcs=false GOTOOLCHAIN=local)
	local v
	for v in SSL_CERT_FILE SSL_CERT_DIR http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
		[ -n "${!v:-}" ] && envs+=("$v=${!v}")
	done
	if [ "$(id -u)" -eq 0 ]; then
		runuser -u "$LAYERS_USER" -- env -i "${envs[@]}" "$@"
	else
		env -i "${envs[@]}" "$@"
	fi
}

# Unpacks each snapshot once (again when the tarball changes).
extract() {
	local tar=$1 dir=$LAYERS_CACHE/upstream/$2 sum
	sum=$(sha256sum "$UPSTREAM/$tar" | cut -d' ' -f1)
	if [ "$(cat "$dir.sha256" 2>/dev/null)" != "$sum" ]; then
		say "unpacking $tar"
		as rm -rf "$dir" "$dir.tmp"
		as mkdir -p "$dir.tmp"
		as tar -xzf "$UPSTREAM/$tar" -C "$dir.tmp" --strip-components=1
		as mv "$dir.tmp" "$dir"
		as sh -c "echo $sum >'$dir.sha256'"
	fi
}

# The checkout, as the bare repository the recipe fetches from (git refuses a
# repository owned by another user, and bitbake must not see uncommitted work).
mirror_checkout() {
	local bare=$LAYERS_CACHE/tether.git
	[ -d "$bare" ] || as git init -q --bare "$bare"
	local head branch
	head=$(git -C "$ROOTDIR" rev-parse HEAD)
	branch=check-layers
	git -C "$ROOTDIR" diff --quiet HEAD -- go.mod go.sum yocto packaging ||
		say "note: uncommitted changes in go.mod, go.sum, yocto/ or packaging/ are not what bitbake sees (it builds HEAD)"
	# Push from the checkout into the bare repository (owned by whoever pushes:
	# git refuses a repository owned by someone else), then hand it to the user.
	if [ "$(id -u)" -eq 0 ]; then
		chown -R root: "$bare"
		git -C "$ROOTDIR" push -q -f "$bare" "HEAD:refs/heads/$branch"
		chown -R "$LAYERS_USER:" "$bare"
	else
		git -C "$ROOTDIR" push -q -f "$bare" "HEAD:refs/heads/$branch"
	fi
	TETHER_REV=$head
	TETHER_BRANCH=$branch
}

# A copy of the layer the user owns: do_update_modules writes into the recipe's directory.
copy_layer() {
	as rm -rf "$LAYERS_CACHE/meta-tether.tmp"
	as mkdir -p "$LAYERS_CACHE/meta-tether.tmp"
	tar -C "$ROOTDIR/yocto/meta-tether" -cf - . | as tar -C "$LAYERS_CACHE/meta-tether.tmp" -xf -
	as rm -rf "$LAYERS_CACHE/meta-tether"
	as mv "$LAYERS_CACHE/meta-tether.tmp" "$LAYERS_CACHE/meta-tether"
}

build_conf() {
	local b=$LAYERS_CACHE/build
	as mkdir -p "$b/conf"
	as tee "$b/conf/bblayers.conf" >/dev/null <<EOF
# Written by packaging/check-layers.sh.
BBPATH = "\${TOPDIR}"
BBFILES ?= ""
BBLAYERS = "$LAYERS_CACHE/upstream/openembedded-core/meta $LAYERS_CACHE/meta-tether $LAYERS_CACHE/meta-tether-check"
EOF
	# The checkout under test comes in through a bbappend, not local.conf: a
	# new commit then reparses one recipe instead of all of them.
	as mkdir -p "$LAYERS_CACHE/meta-tether-check/conf" "$LAYERS_CACHE/meta-tether-check/recipes-iot/tether"
	as tee "$LAYERS_CACHE/meta-tether-check/conf/layer.conf" >/dev/null <<'EOF'
# Written by packaging/check-layers.sh: builds meta-tether from the local checkout.
BBPATH .= ":${LAYERDIR}"
BBFILES += "${LAYERDIR}/recipes-*/*/*.bbappend"
BBFILE_COLLECTIONS += "tether-check"
BBFILE_PATTERN_tether-check = "^${LAYERDIR}/"
BBFILE_PRIORITY_tether-check = "7"
LAYERDEPENDS_tether-check = "tether"
LAYERSERIES_COMPAT_tether-check = "wrynose"
EOF
	as tee "$LAYERS_CACHE/meta-tether-check/recipes-iot/tether/tether_%.bbappend" >/dev/null <<EOF
TETHER_GIT_URI = "git://$LAYERS_CACHE/tether.git;protocol=file;branch=$TETHER_BRANCH"
SRCREV = "$TETHER_REV"
EOF
	as tee "$b/conf/local.conf" >/dev/null <<EOF
# Written by packaging/check-layers.sh: oe-core's nodistro for qemuarm64.
MACHINE = "qemuarm64"
DL_DIR = "$LAYERS_CACHE/downloads"
TMPDIR = "$b/tmp"
# uninative downloads a prebuilt host glibc, which cannot be reached here.
INHERIT_DISTRO:remove = "uninative"
# Debian 12 is not on the Yocto Project's tested list; the check must stay warning-free.
SANITY_TESTED_DISTROS = ""
# The only network here is the Go module proxy, which the gomod:// fetcher uses.
CONNECTIVITY_CHECK_URIS = "https://proxy.golang.org/"
BB_NUMBER_THREADS = "2"
PARALLEL_MAKE = "-j 2"
CONF_VERSION = "2"
EOF
}

bb() { as bash -c "cd '$LAYERS_CACHE/build' && PATH='$LAYERS_CACHE/upstream/bitbake/bin:$LAYERS_CACHE/upstream/openembedded-core/scripts':\$PATH BBPATH='$LAYERS_CACHE/build' $*"; }

yocto_setup() {
	host_deps
	setup_user
	extract $OE_TAR openembedded-core
	extract $BB_TAR bitbake
	mirror_checkout
	copy_layer
	build_conf
}

# The modules tether-go-mods.inc lists must be those the build needs: a
# go.mod change without `make yocto-update-modules` fails here, cheaply.
check_go_mods() {
	local inc=$ROOTDIR/yocto/meta-tether/recipes-iot/tether/tether-go-mods.inc want have
	want=$(cd "$ROOTDIR" && { go list -deps -f '{{with .Module}}{{if not .Main}}{{.Path}} {{.Version}}{{end}}{{end}}' ./agent/cmd/tether
		CGO_ENABLED=1 go list -deps -tags nopkcs11 -f '{{with .Module}}{{if not .Main}}{{.Path}} {{.Version}}{{end}}{{end}}' ./agent/cmd/tether; } | sort -u)
	have=$(sed -n 's|^ *gomod://\([^;]*\);version=\([^;]*\);sha256sum=.*|\1 \2|p' "$inc" | sort -u)
	if [ "$want" != "$have" ]; then
		diff <(echo "$want") <(echo "$have") >&2 || true
		die "tether-go-mods.inc does not list the modules go.mod needs (< needed, > listed): run make yocto-update-modules"
	fi
}

check_yocto() {
	check_go_mods
	yocto_setup
	local log=$LAYERS_CACHE/bitbake-p.log
	say "bitbake -p (parses openembedded-core and meta-tether; minutes on a cold cache)"
	bb "bitbake -p" >"$log" 2>&1 || { tail -30 "$log" >&2; die "bitbake -p failed (log: $log)"; }
	if grep -E '^(WARNING|ERROR):' "$log" >&2; then
		die "bitbake -p printed warnings or errors (log: $log)"
	fi
	say "bitbake-layers show-recipes tether"
	bb "bitbake-layers show-recipes tether" >"$LAYERS_CACHE/show-recipes.log" 2>&1 ||
		{ cat "$LAYERS_CACHE/show-recipes.log" >&2; die "bitbake-layers show-recipes failed"; }
	grep -q '^tether:' "$LAYERS_CACHE/show-recipes.log" || { cat "$LAYERS_CACHE/show-recipes.log" >&2; die "show-recipes does not list tether"; }
	grep -A1 '^tether:' "$LAYERS_CACHE/show-recipes.log" | grep -q 'meta-tether' || die "show-recipes lists tether, but not from meta-tether"

	say "bitbake -e tether"
	local env=$LAYERS_CACHE/tether-env.txt
	bb "bitbake -e tether" >"$env" 2>&1 || { tail -30 "$env" >&2; die "bitbake -e tether failed"; }
	expect_var() { # NAME REGEX
		local line
		line=$(grep -E "^(export )?$1=" "$env" | tail -1)
		[[ $line =~ $2 ]] || die "bitbake -e tether: $1 is '${line#*=}', expected it to match $2"
	}
	expect_var GO_IMPORT '"github.com/tetherd/tether"'
	expect_var LICENSE '^"Apache-2\.0 & .*MIT'
	expect_var LIC_FILES_CHKSUM 'src/github.com/tetherd/tether/LICENSE;md5=.*pkg/mod/.*spdx='
	expect_var SYSTEMD_SERVICE:tether '"tether.service tether.socket"'
	expect_var USERADD_PARAM:tether '--system --gid tether .*nologin.*tether'
	expect_var GROUPADD_PARAM:tether '--system tether'
	expect_var CONFFILES:tether '/etc/tether/tether.toml'
	expect_var GO_EXTRA_LDFLAGS '-X main.version=0\.1\.0\+git.* -X main.commit=[0-9a-f]{7} -X main.buildDate=[0-9]{4}-[0-9]{2}-[0-9]{2}T'
	expect_var GOBUILDFLAGS '-buildmode=pie.*-tags='
	expect_var CGO_ENABLED '"1"'
	expect_var RRECOMMENDS:tether 'p11-kit'
	expect_var SRC_URI 'gomod://github.com/aws/aws-sdk-go-v2;version=v[^;]*;sha256sum=[0-9a-f]{64}'
	expect_var bindir '"/usr/bin"'

	say "bitbake tether -c fetch (every module through the Go module proxy, checksums checked)"
	bb "bitbake tether -c fetch" >"$LAYERS_CACHE/fetch.log" 2>&1 ||
		{ grep -E 'ERROR|mismatch' "$LAYERS_CACHE/fetch.log" | head -20 >&2; die "bitbake tether -c fetch failed (log: $LAYERS_CACHE/fetch.log)"; }
	local n
	n=$(grep -c 'gomod://' "$ROOTDIR/yocto/meta-tether/recipes-iot/tether/tether-go-mods.inc")
	say "fetched tether and $n gomod:// entries"
	say "bitbake tether -c unpack"
	bb "bitbake tether -c unpack" >"$LAYERS_CACHE/unpack.log" 2>&1 ||
		{ grep -E 'ERROR' "$LAYERS_CACHE/unpack.log" | head -20 >&2; die "bitbake tether -c unpack failed (log: $LAYERS_CACHE/unpack.log)"; }
	if grep -E '^WARNING:' "$LAYERS_CACHE/fetch.log" "$LAYERS_CACHE/unpack.log" >&2; then
		die "fetch/unpack printed warnings"
	fi
	say "kas file against kas's schema"
	/usr/bin/python3 - "$ROOTDIR/yocto/meta-tether/kas/tether-qemuarm64.yml" <<'PY' || die "the kas file does not follow kas's schema"
import json, sys, yaml, jsonschema
schema = json.load(open("/usr/lib/python3/dist-packages/kas/schema-kas.json"))
jsonschema.validate(yaml.safe_load(open(sys.argv[1])), schema)
PY
	say "yocto: OK"
}

# update_modules: do_update_modules of go-mod-update-modules.bbclass, run by
# tinfoil on the unpacked source with the host's go (go-native cannot be
# built here: go-binary-native downloads a prebuilt Go), then copied back.
update_modules() {
	yocto_setup
	say "bitbake tether -c unpack (the source do_update_modules reads)"
	# The current .inc files stay: do_update_modules takes the license of a
	# file it cannot identify from its spdx= in tether-licenses.inc (set it
	# there by hand once, it is kept from then on), and stale module
	# entries only cost a download.
	bb "bitbake tether -c unpack" >"$LAYERS_CACHE/unpack.log" 2>&1 ||
		{ grep ERROR "$LAYERS_CACHE/unpack.log" >&2; die "unpack failed (log: $LAYERS_CACHE/unpack.log)"; }
	bb "OECORE='$LAYERS_CACHE/upstream/openembedded-core' python3 -" <<'EOF'
import sys, os
# bitbake's and oe-core's Python libraries, as the bitbake server has them.
sys.path.insert(0, os.path.join(os.environ['PATH'].split(':')[0], '..', 'lib'))
sys.path.insert(0, os.path.join(os.environ['OECORE'], 'meta', 'lib'))
import bb.tinfoil, bb.build
with bb.tinfoil.Tinfoil() as tinfoil:
    tinfoil.prepare(config_only=False, quiet=2)
    d = tinfoil.parse_recipe('tether')
    bb.build.exec_func('do_update_modules', d)
EOF
	local dir=$LAYERS_CACHE/meta-tether/recipes-iot/tether
	cp "$dir/tether-go-mods.inc" "$dir/tether-licenses.inc" "$ROOTDIR/yocto/meta-tether/recipes-iot/tether/"
	say "regenerated yocto/meta-tether/recipes-iot/tether/tether-{go-mods,licenses}.inc ($(grep -c gomod:// "$dir/tether-go-mods.inc") modules)"
}

BR_EXT=$ROOTDIR/packaging/buildroot

buildroot_setup() {
	host_deps
	setup_user
	extract $BR_TAR buildroot
	mirror_checkout
	as rm -rf "$LAYERS_CACHE/br-external"
	as mkdir -p "$LAYERS_CACHE/br-external"
	tar -C "$BR_EXT" -cf - . | as tar -C "$LAYERS_CACHE/br-external" -xf -
}

# br ARGS...: make in the Buildroot tree, as the user, with the external tree.
br() { as make -s -C "$LAYERS_CACHE/upstream/buildroot" BR2_EXTERNAL="$LAYERS_CACHE/br-external" "$@"; }

# br_download [check]: Buildroot's own download of TETHER_VERSION (git
# archive plus vendored modules) from the local mirror, with this machine's
# Go and module proxy (Buildroot would build host-go first, which downloads
# a prebuilt Go). With "check", dl-wrapper verifies it against tether.hash.
br_download() {
	local v dl=$LAYERS_CACHE/br-dl hashopt=() nocheck=""
	v=$(sed -n 's/^TETHER_VERSION = //p' "$BR_EXT/package/tether/tether.mk")
	BR_SOURCE=tether-$v-git4-go2.tar.gz
	as rm -rf "$dl/tether"
	if [ "${1:-}" = check ]; then
		hashopt=(-H "$LAYERS_CACHE/br-external/package/tether/tether.hash")
	else
		nocheck=$BR_SOURCE
	fi
	as env GOFLAGS=-mod=vendor GO111MODULE=on GOTOOLCHAIN=local GOPROXY="$(go env GOPROXY)" \
		GOMODCACHE="$LAYERS_CACHE/br-gomod" GOPATH="$LAYERS_CACHE/br-gopath" GIT=git TAR=tar \
		BR_NO_CHECK_HASH_FOR="$nocheck" \
		"$LAYERS_CACHE/upstream/buildroot/support/download/dl-wrapper" -q -c "$v" -d "$dl/tether" -D "$dl" \
		-f "$BR_SOURCE" "${hashopt[@]}" -n "tether-$v" -N tether -o "$dl/tether/$BR_SOURCE" \
		-u "git+file://$LAYERS_CACHE/tether.git" -p go -- >"$LAYERS_CACHE/br-download.log" 2>&1 ||
		{ tail -20 "$LAYERS_CACHE/br-download.log" >&2; return 1; }
	BR_TARBALL=$dl/tether/$BR_SOURCE
}

br_expect() { # NAME REGEX: a printvars line
	grep -Eq "^$1=$2" "$LAYERS_CACHE/printvars.txt" ||
		{ grep "^$1=" "$LAYERS_CACHE/printvars.txt" >&2; die "printvars: $1 does not match $2"; }
}

check_buildroot() {
	buildroot_setup
	local out=$LAYERS_CACHE/br-out files log=$LAYERS_CACHE/check-package.log variant
	say "utils/check-package on packaging/buildroot"
	mapfile -t files < <(find "$LAYERS_CACHE/br-external" -type f | sort)
	(cd "$LAYERS_CACHE/upstream/buildroot" && as /usr/bin/python3 utils/check-package -b "${files[@]}") >"$log" 2>&1 ||
		{ cat "$log" >&2; die "check-package failed"; }
	grep -q '^0 warnings generated' "$log" || { cat "$log" >&2; die "check-package found problems"; }

	for variant in pkcs11 nopkcs11; do
		say "qemu_aarch64_virt_defconfig + configs/tether.fragment ($variant): printvars, tether-show-info"
		as rm -rf "$out"
		br O="$out" qemu_aarch64_virt_defconfig >/dev/null
		as cp "$LAYERS_CACHE/br-external/configs/tether.fragment" "$out/tether.fragment"
		if [ $variant = nopkcs11 ]; then
			as sed -i 's/^BR2_PACKAGE_TETHER_PKCS11=y/# BR2_PACKAGE_TETHER_PKCS11 is not set/' "$out/tether.fragment"
		fi
		(cd "$out" && as "$LAYERS_CACHE/upstream/buildroot/support/kconfig/merge_config.sh" -m -O "$out" \
			"$out/.config" "$out/tether.fragment") >/dev/null
		br O="$out" olddefconfig >/dev/null
		grep -qx 'BR2_PACKAGE_TETHER=y' "$out/.config" || die "the fragment did not enable BR2_PACKAGE_TETHER (a dependency is missing)"
		br O="$out" printvars VARS='TETHER_%' >"$LAYERS_CACHE/printvars.txt" 2>&1 ||
			{ cat "$LAYERS_CACHE/printvars.txt" >&2; die "printvars VARS='TETHER_%' failed"; }
		br_expect TETHER_BUILD_TARGETS 'agent/cmd/tether$'
		br_expect TETHER_LDFLAGS '-X main.version=[0-9a-f]{40} -X main.commit=[0-9a-f]{7} -X main.buildDate=[0-9]{4}-'
		br_expect TETHER_USERS '.*tether -1 tether -1 \* /var/lib/tether'
		br_expect TETHER_INSTALL_INIT_SYSTEMD '.*tether.service'
		br_expect TETHER_INSTALL_INIT_SYSV '.*S95tether'
		br_expect TETHER_SOURCE 'tether-[0-9a-f]{40}-git4-go2.tar.gz'
		if [ $variant = nopkcs11 ]; then
			br_expect TETHER_TAGS 'nopkcs11'
		else
			br_expect TETHER_GO_ENV 'CGO_ENABLED=1'
		fi
		br O="$out" tether-show-info >"$LAYERS_CACHE/show-info.json" 2>&1 ||
			{ cat "$LAYERS_CACHE/show-info.json" >&2; die "tether-show-info failed"; }
		/usr/bin/python3 - "$LAYERS_CACHE/show-info.json" <<'PY' || die "tether-show-info: unexpected output ($LAYERS_CACHE/show-info.json)"
import json, sys
info = json.load(open(sys.argv[1]))["tether"]
assert info["type"] == "target", info["type"]
assert info["licenses"].startswith("Apache-2.0"), info["licenses"]
assert "host-go" in info["dependencies"], info["dependencies"]
assert any(d["source"].endswith("-go2.tar.gz") for d in info["downloads"]), info["downloads"]
PY
	done
	say "Buildroot's download of TETHER_VERSION (git archive + vendored modules), checked against tether.hash"
	br_download check ||
		die "the download does not match package/tether/tether.hash (log: $LAYERS_CACHE/br-download.log); after bumping TETHER_VERSION run make buildroot-hash"
	local want
	want=$(br_license_hashes "$BR_TARBALL")
	if ! diff <(echo "$want") <(grep -v "$BR_SOURCE" "$BR_EXT/package/tether/tether.hash" | grep '^sha256') >&2; then
		die "tether.hash: the license files' hashes differ from the download (< download, > tether.hash); run make buildroot-hash"
	fi
	say "buildroot: OK"
}

# br_license_hashes TARBALL: "sha256  SUM  FILE" for each TETHER_LICENSE_FILES
# entry, as found in the downloaded tarball.
br_license_hashes() {
	local tmp f
	tmp=$(mktemp -d)
	tar -xzf "$1" -C "$tmp" --strip-components=1
	for f in $(sed -n '/^TETHER_LICENSE_FILES = /,/^[^\t]/{/^TETHER_LICENSE_FILES = \|^\t/{s/^TETHER_LICENSE_FILES = //;s/\\$//;p}}' "$BR_EXT/package/tether/tether.mk"); do
		[ -f "$tmp/$f" ] || { rm -rf "$tmp"; die "TETHER_LICENSE_FILES: $f is not in $1"; }
		printf 'sha256  %s  %s\n' "$(sha256sum "$tmp/$f" | cut -d' ' -f1)" "$f"
	done
	rm -rf "$tmp"
}

# buildroot_hash: recomputes tether.hash for TETHER_VERSION.
buildroot_hash() {
	buildroot_setup
	br_download || die "download failed (log: $LAYERS_CACHE/br-download.log)"
	local sum licenses
	sum=$(sha256sum "$BR_TARBALL" | cut -d' ' -f1)
	licenses=$(br_license_hashes "$BR_TARBALL")
	cat >"$BR_EXT/package/tether/tether.hash" <<EOF
# Locally computed: the git archive of TETHER_VERSION with its vendored Go
# modules, as Buildroot's download makes it, and the license files in it
# (make buildroot-hash).
sha256  $sum  $BR_SOURCE
$licenses
EOF
	say "wrote packaging/buildroot/package/tether/tether.hash"
}

for what in "$@"; do
	case $what in
	yocto) check_yocto ;;
	buildroot) check_buildroot ;;
	update-modules) update_modules ;;
	buildroot-hash) buildroot_hash ;;
	*) die "unknown check '$what'; use yocto, buildroot, update-modules or buildroot-hash" ;;
	esac
done
