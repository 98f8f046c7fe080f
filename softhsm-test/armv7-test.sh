#!/bin/sh
# armv7-test.sh: the static armv7 (GOARM=7, 32-bit) flavour under
# qemu-arm-static against Debian's armhf SoftHSM through Debian's armhf
# `p11-kit remote`: the CGO_ENABLED=0 hsm tests over the p11-kit remote
# backend, then keygen, csr and a credentials fetch from the simulator with
# the static binary (softhsm-test/static-p11kit.sh). On armhf CK_ULONG is 32
# bits, so this also checks the protocol against a 32-bit server.
#
# The armhf packages are fetched with `apt-get download` (after `dpkg
# --add-architecture armhf && apt-get update`) and unpacked with dpkg-deb -x
# into a work folder: nothing armhf is installed.
#
# Needs (Debian): golang, qemu-user-static, libc6-dev-armhf-cross (the armhf
# loader and libc), libstdc++ for armhf from gcc-arm-linux-gnueabihf. Root
# for the dpkg/apt steps when armhf is not yet a foreign architecture.
set -eu
cd "$(dirname "$0")/.."
if [ -n "${WORK:-}" ]; then
	work=$WORK
else
	work=$(mktemp -d /tmp/tether-armv7.XXXXXX)
	trap 'if [ -f "$work/passed" ]; then rm -rf "$work"; fi' EXIT
fi
mkdir -p "$work/debs" "$work/root"
for need in qemu-arm-static:qemu-user-static dpkg-deb:dpkg /usr/arm-linux-gnueabihf/lib/ld-linux-armhf.so.3:libc6-dev-armhf-cross /usr/arm-linux-gnueabihf/lib/libstdc++.so.6:gcc-arm-linux-gnueabihf; do
	case ${need%%:*} in
	/*) [ -e "${need%%:*}" ] ;;
	*) command -v "${need%%:*}" >/dev/null ;;
	esac || { echo "$0: ${need%%:*} missing: apt-get install ${need##*:}" >&2; exit 1; }
done

echo "== fetching the armhf SoftHSM and p11-kit (download only, not installed)"
if ! dpkg --print-foreign-architectures | grep -qx armhf; then
	dpkg --add-architecture armhf
	apt-get update -qq
fi
debs="libsofthsm2:armhf libssl3:armhf p11-kit:armhf libp11-kit0:armhf libffi8:armhf"
# shellcheck disable=SC2086 # a word list on purpose
(cd "$work/debs" && apt-get download -qq $debs 2>/dev/null) ||
	{ apt-get update -qq && (cd "$work/debs" && apt-get download -qq $debs); }
for deb in "$work"/debs/*.deb; do dpkg-deb -x "$deb" "$work/root"; done
module=$(find "$work/root" -name libsofthsm2.so -path '*arm-linux-gnueabihf*' | head -n1)
[ -n "$module" ] || { echo "$0: libsofthsm2.so not found in libsofthsm2:armhf" >&2; exit 1; }

./softhsm-test/static-p11kit.sh armv7 "$work" "$module"
echo "armv7: PASS"
touch "$work/passed"
