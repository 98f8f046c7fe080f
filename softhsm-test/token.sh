#!/bin/sh
# token.sh DIR LABEL PINFILE [KEY-LABEL [TYPE]]
#
# Makes a throw-away SoftHSM2 token in DIR with its own softhsm2.conf (export
# SOFTHSM2_CONF=DIR/softhsm2.conf to use it), user PIN read from PINFILE
# (created with a random PIN, mode 0600, when missing), and a key pair
# KEY-LABEL (default "device") of TYPE ec-p256 (default), ec-p384 or
# rsa-2048: private key sensitive and never extractable.
#
# PINs travel through GNUTLS_PIN/GNUTLS_SO_PIN environment variables of
# p11tool (gnutls-bin), never through a command line. Prints the key's
# RFC 7512 URI for tether's identity.private_key.
set -eu

usage() { echo "usage: $0 DIR LABEL PINFILE [KEY-LABEL [ec-p256|ec-p384|rsa-2048]]" >&2; exit 2; }
[ $# -ge 3 ] || usage
dir=$1 label=$2 pinfile=$3 key=${4:-device} type=${5:-ec-p256}
module=${MODULE:-/usr/lib/softhsm/libsofthsm2.so}

for need in "$module:softhsm2" "/usr/bin/p11tool:gnutls-bin" "/usr/bin/openssl:openssl"; do
	[ -e "${need%%:*}" ] || { echo "$0: ${need%%:*} missing: apt-get install ${need##*:}" >&2; exit 1; }
done
case $type in
ec-p256) gen="--generate-privkey ecdsa --curve secp256r1" ;;
ec-p384) gen="--generate-privkey ecdsa --curve secp384r1" ;;
rsa-2048) gen="--generate-privkey rsa --bits 2048" ;;
*) usage ;;
esac

umask 077
mkdir -p "$dir/tokens"
dir=$(cd "$dir" && pwd)
conf=$dir/softhsm2.conf
printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n' "$dir" >"$conf"
export SOFTHSM2_CONF=$conf

[ -s "$pinfile" ] || openssl rand -hex 8 >"$pinfile"
chmod 600 "$pinfile"
pinfile=$(cd "$(dirname "$pinfile")" && pwd)/$(basename "$pinfile")
GNUTLS_PIN=$(head -n1 "$pinfile")
GNUTLS_SO_PIN=$(openssl rand -hex 8) # throw-away: nobody administers a test token
export GNUTLS_PIN GNUTLS_SO_PIN

if ! p11tool --provider "$module" --list-tokens 2>/dev/null | grep -q "token=$label\$\|token=$label;"; then
	# SoftHSM always keeps one uninitialised token with an empty label.
	free="pkcs11:model=SoftHSM%20v2;manufacturer=SoftHSM%20project;serial=;token="
	p11tool --provider "$module" --initialize --label "$label" "$free" >/dev/null
	p11tool --provider "$module" --initialize-pin "pkcs11:token=$label" >/dev/null
fi
# shellcheck disable=SC2086 # $gen is a word list on purpose
# p11tool chats on stderr; its words are shown only when it fails.
if ! p11tool --provider "$module" --login $gen --label "$key" --mark-private --outfile /dev/null "pkcs11:token=$label" 2>"$dir/p11tool.err"; then
	echo "$0: generating key $key in token $label failed:" >&2
	cat "$dir/p11tool.err" >&2
	exit 1
fi
rm -f "$dir/p11tool.err"
echo "pkcs11:token=$label;object=$key?module-path=$module&pin-source=file:$pinfile"
