#!/bin/sh
# arm64-test.sh: run the hsm package's SoftHSM integration tests as an arm64
# binary under qemu-user, against Debian's arm64 libsofthsm2.
#
#  1. cross-compiles the test binary: CGO_ENABLED=1 GOARCH=arm64 CC=aarch64-linux-gnu-gcc go test -c
#  2. fetches libsofthsm2:arm64 and libssl3:arm64 with `apt-get download`
#     (after `dpkg --add-architecture arm64 && apt-get update`) and unpacks
#     them with dpkg-deb -x into a work folder: nothing arm64 is installed
#  3. runs the binary with qemu-aarch64-static, LD_LIBRARY_PATH pointing at
#     /usr/aarch64-linux-gnu/lib and the unpacked libraries (qemu's -L hangs
#     here; the binary is started through the cross ld-linux-aarch64.so.1,
#     since its /lib interpreter does not exist on the host), and hsmtest
#     told to use the unpacked module. Tokens are created
#     by the arm64 test binary itself (C_InitToken), so no host tool touches
#     them.
#
# Then softhsm-test/static-p11kit.sh runs the static flavour against the same
# arm64 SoftHSM through Debian's arm64 `p11-kit remote`.
#
# Needs (Debian): golang, gcc-aarch64-linux-gnu, qemu-user-static. Root for
# the dpkg/apt steps when arm64 is not yet a foreign architecture.
set -eu
cd "$(dirname "$0")/.."
if [ -n "${WORK:-}" ]; then
	work=$WORK
else
	work=$(mktemp -d /tmp/tether-arm64.XXXXXX)
	# A throw-away folder goes when the run passes; a failed run keeps its log.
	trap 'if [ -f "$work/passed" ]; then rm -rf "$work"; fi' EXIT
fi
mkdir -p "$work/debs" "$work/root"

for need in aarch64-linux-gnu-gcc:gcc-aarch64-linux-gnu qemu-aarch64-static:qemu-user-static dpkg-deb:dpkg; do
	command -v "${need%%:*}" >/dev/null || { echo "$0: ${need%%:*} missing: apt-get install ${need##*:}" >&2; exit 1; }
done

echo "== cross-compiling hsm tests for arm64"
CGO_ENABLED=1 GOOS=linux GOARCH=arm64 CC=aarch64-linux-gnu-gcc \
	go test -c -o "$work/hsm.test" ./hsm/

echo "== fetching libsofthsm2:arm64 (download only, not installed)"
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
	dpkg --add-architecture arm64
	apt-get update -qq
fi
debs="libsofthsm2:arm64 libssl3:arm64 p11-kit:arm64 libp11-kit0:arm64 libffi8:arm64"
# shellcheck disable=SC2086 # a word list on purpose
(cd "$work/debs" && apt-get download -qq $debs 2>/dev/null) ||
	{ apt-get update -qq && (cd "$work/debs" && apt-get download -qq $debs); }
for deb in "$work"/debs/*.deb; do dpkg-deb -x "$deb" "$work/root"; done
module=$(find "$work/root" -name libsofthsm2.so -path '*aarch64*' | head -n1)
[ -n "$module" ] || module=$(find "$work/root" -name libsofthsm2.so | head -n1)
file -L "$module" 2>/dev/null | grep -q aarch64 || echo "warning: $module is not recognised as aarch64 by file(1)" >&2

echo "== running under qemu-aarch64-static with $module"
cd "$work"
# TestTokenKeyAttributes runs the host's pkcs11-tool, which cannot load an
# arm64 module, so it stays on the native run; so do the p11-kit backends
# here (they would start the host's p11-kit): static-p11kit.sh runs them.
LD_LIBRARY_PATH="/usr/aarch64-linux-gnu/lib:$work/root/usr/lib/aarch64-linux-gnu:$(dirname "$module")" \
HSMTEST_SOFTHSM2_MODULE=$module \
	qemu-aarch64-static /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 ./hsm.test -test.v -test.skip 'TestTokenKeyAttributes|TestSealerSameInProcessAndThroughP11Kit|/p11-kit_' "$@" 2>&1 | tee "$work/test.log" |
	grep -E '^(=== RUN|--- |PASS|FAIL|ok)' || true
grep -q '^PASS$' "$work/test.log" || { echo "$0: arm64 tests failed; log: $work/test.log" >&2; exit 1; }
echo "arm64 (cgo): PASS"
cd "$OLDPWD"
./softhsm-test/static-p11kit.sh arm64 "$work" "$module"
echo "arm64: PASS"
touch "$work/passed"
