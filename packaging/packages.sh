#!/bin/sh
# packages.sh: make packages. Builds tether's .deb, .rpm, .ipk and .apk for
# amd64, arm64 and armv7 into dist/packages with nfpm (bin/nfpm, built from
# the tools/ module) from the binaries `make static` and `make cross-pkcs11`
# put in dist/. Which binary each format carries, and why, is in
# docs/packaging.md:
#   .deb .rpm  glibc distributions: the cgo PKCS#11 build (dist/tether-pkcs11-linux-ARCH)
#   .apk .ipk  musl (Alpine, OpenWrt) or unknown C library: the static build (dist/tether-linux-ARCH)
# Every timestamp is SOURCE_DATE_EPOCH (default: the last commit's time), so
# two runs from the same commit give identical files.
set -eu
cd "$(dirname "$0")/.."
nfpm=${NFPM:-bin/nfpm}
out=${OUT:-dist/packages}
[ -x "$nfpm" ] || { echo "packages.sh: $nfpm missing: run 'make packages' (it builds nfpm from tools/)" >&2; exit 1; }
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
PKG_MAINTAINER=${PKG_MAINTAINER:-tether maintainers <maintainers@tetherd.dev>}
export SOURCE_DATE_EPOCH PKG_MAINTAINER
GEN=$(mktemp -d)
trap 'rm -rf "$GEN"' EXIT
trap 'exit 1' INT TERM
export GEN
mkdir -p "$out"

# Generated files, compressed without names or times (gzip -n).
gzip -9n <packaging/tether.1 >"$GEN/tether.1.gz"
date=$(date -u -R -d "@$SOURCE_DATE_EPOCH")
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
printf 'tether (%s-1) unstable; urgency=medium\n\n  * Built from commit %s.\n\n -- %s  %s\n' \
	"$(packaging/version.sh deb)" "$commit" "$PKG_MAINTAINER" "$date" | gzip -9n >"$GEN/changelog.gz"
touch -d "@$SOURCE_DATE_EPOCH" "$GEN"/*
# nfpm's apk takes the maintainer scripts' own mtimes (a checkout's time):
# pin them too, or two checkouts of one commit make different .apk files.
touch -d "@$SOURCE_DATE_EPOCH" packaging/scripts/*.sh

for arch in ${ARCHES:-amd64 arm64 armv7}; do
	case $arch in
	armv7) TETHER_ARCH=arm7 ;;
	*) TETHER_ARCH=$arch ;;
	esac
	for fmt in ${FORMATS:-deb rpm ipk apk}; do
		case $fmt in
		deb) TETHER_BINARY=dist/tether-pkcs11-linux-$arch PKG_DEPENDS="libc6 (>= 2.34)" ;;
		rpm) TETHER_BINARY=dist/tether-pkcs11-linux-$arch PKG_DEPENDS="glibc >= 2.34" ;;
		*) TETHER_BINARY=dist/tether-linux-$arch PKG_DEPENDS="" ;;
		esac
		[ -f "$TETHER_BINARY" ] || { echo "packages.sh: $TETHER_BINARY missing: run 'make static cross-pkcs11' (or 'make packages')" >&2; exit 1; }
		PKG_VERSION=$(packaging/version.sh "$fmt")
		export TETHER_ARCH TETHER_BINARY PKG_DEPENDS PKG_VERSION
		"$nfpm" package --config packaging/nfpm.yaml --packager "$fmt" --target "$out/" >"$GEN/nfpm.log" 2>&1 ||
			{ cat "$GEN/nfpm.log" >&2; echo "packages.sh: nfpm failed for $fmt $arch" >&2; exit 1; }
	done
done
ls -l "$out"
