#!/bin/sh
# Installs the Debian packages tether's tests and demo use. As root it installs
# what is missing; otherwise it names what is missing and fails.
set -eu

packages="softhsm2 p11-kit opensc gnutls-bin openssl mosquitto mosquitto-clients awscli python3-boto3 systemd util-linux ca-certificates debootstrap systemd-container rpm rpm2cpio cpio lintian swtpm swtpm-tools tpm2-tools tpm2-openssl curl iproute2 python3-prometheus-client prometheus gnuplot-nox"
cross="gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf libc6-dev-arm64-cross libc6-dev-armhf-cross qemu-user-static"
# make check-layers: bitbake's host tools and locale, Buildroot's check-package, kas's schema.
layers="chrpath cpio diffstat gawk lz4 zstd file texinfo wget git locales python3-magic flake8 shellcheck python3-jsonschema python3-yaml kas"
case "${1:-}" in --cross) packages="$packages $cross" ;; --layers) packages="$layers" ;; esac

missing=""
for p in $packages; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "make deps: missing Debian packages:$missing" >&2
	echo "make deps: run 'sudo apt-get install$missing' (or run make as root)" >&2
	exit 1
fi
echo "make deps: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing >/dev/null; }; then
	echo "make deps: apt-get could not install:$missing" >&2
	exit 1
fi
