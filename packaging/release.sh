#!/bin/sh
# release.sh: make release (after make packages). Adds to dist/ what a
# release page needs besides the binaries and packages already there:
#   tether.cdx.json, tether-pkcs11.cdx.json  CycloneDX 1.6 SBOMs of the static
#       and the PKCS#11 builds: every Go module linked in, its version and
#       detected licence (cyclonedx-gomod, built from the tools/ module)
#   VERSION    git describe, as stamped into the binaries (tether version)
#   SHA256SUMS of every file above, for sha256sum -c from dist/
# Nothing here depends on the time or the machine: SOURCE_DATE_EPOCH is the
# commit's time, the SBOMs carry no timestamp and a serial number derived
# from the commit, so two runs from one commit give identical files
# (make test-release checks that).
set -eu
cd "$(dirname "$0")/.."
version=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
commit=$(git rev-parse HEAD)
sbom=${CYCLONEDX:-$PWD/bin/cyclonedx-gomod}
[ -x "$sbom" ] || { echo "release.sh: $sbom missing: run 'make release' (it builds it from tools/)" >&2; exit 1; }
for f in tether-linux-amd64 tether-linux-arm64 tether-linux-armv7 \
	tether-pkcs11-linux-amd64 tether-pkcs11-linux-arm64 tether-pkcs11-linux-armv7; do
	[ -f "dist/$f" ] || { echo "release.sh: dist/$f missing: run 'make release'" >&2; exit 1; }
done
ls dist/packages/*.deb >/dev/null 2>&1 || { echo "release.sh: dist/packages is empty: run 'make release'" >&2; exit 1; }

# cyclonedx-gomod reads the version from git itself and cannot open a git
# worktree's repository; a worktree gets the SBOM of a clone of its HEAD.
top=$PWD
src=$PWD
if [ "$(git rev-parse --git-dir)" != "$(git rev-parse --git-common-dir)" ]; then
	src=$(mktemp -d)
	trap 'rm -rf "$src"' EXIT
	trap 'exit 1' INT TERM
	git clone -q "$PWD" "$src"
	git -C "$src" checkout -q "$commit"
fi
# A serial number (RFC 4122 form) fixed by the commit.
h=$(printf '%s' "$commit" | sha256sum | cut -c1-32)
serial="urn:uuid:$(echo "$h" | cut -c1-8)-$(echo "$h" | cut -c9-12)-5$(echo "$h" | cut -c14-16)-8$(echo "$h" | cut -c18-20)-$(echo "$h" | cut -c21-32)"
for flavour in static pkcs11; do
	case $flavour in
	static) cgo=0 out=tether.cdx.json ;;
	pkcs11) cgo=1 out=tether-pkcs11.cdx.json ;;
	esac
	(cd "$src" && GOOS=linux GOARCH=amd64 CGO_ENABLED=$cgo "$sbom" app -json -licenses -assert-licenses \
		-notimestamp -serial "$serial" -main agent/cmd/tether -output "$top/dist/$out" . ) 2>"$top/dist/.sbom.log" ||
		{ cat "$top/dist/.sbom.log" >&2; echo "release.sh: SBOM generation failed" >&2; exit 1; }
	rm -f "$top/dist/.sbom.log"
done
echo "$version" >dist/VERSION

cd dist
find . -maxdepth 2 -type f ! -name SHA256SUMS ! -name '.*' | sed 's|^\./||' | LC_ALL=C sort | xargs sha256sum >SHA256SUMS
echo "dist/ ($version):"
cat SHA256SUMS
