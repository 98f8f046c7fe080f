#!/bin/sh
# pki.sh DIR [THING] - a test PKI for the IoT simulator and mosquitto:
#   ca.crt ca.key                 test CA (ECDSA P-256)
#   server.crt server.key         server certificate for 127.0.0.1, ::1, localhost
#   device-ec.crt device-ec.key   device certificate, CN=THING (default gw-0001), ECDSA P-256
#   device-rsa.crt device-rsa.key device certificate, CN=THING, RSA 2048
# Keys are 0600. Nothing here is trusted by the system.
set -eu
if [ $# -lt 1 ]; then
	echo "usage: $0 DIR [THING]" >&2
	exit 2
fi
if ! command -v openssl >/dev/null 2>&1; then
	echo "pki.sh: openssl not found: install the Debian package openssl (apt-get install openssl)" >&2
	exit 1
fi
dir=$1
thing=${2:-gw-0001}
umask 077
mkdir -p "$dir"
cd "$dir"
# quiet runs openssl without its chatter, but shows what it said when it fails.
quiet() {
	if ! "$@" 2>.openssl.err; then
		echo "pki.sh: $* failed:" >&2
		cat .openssl.err >&2
		rm -f .openssl.err
		exit 1
	fi
	rm -f .openssl.err
}

quiet openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
	-keyout ca.key -out ca.crt -days 3650 -subj "/O=tether test/CN=tether test CA" \
	-addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
	-addext "keyUsage=critical,keyCertSign,cRLSign"

printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature" \
	"extendedKeyUsage=serverAuth" "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost" >server.ext
printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature" \
	"extendedKeyUsage=clientAuth" >device.ext

issue() { # name keyopts... ; subject from $subj, extensions from $ext
	name=$1
	shift
	quiet openssl req -new -newkey "$@" -nodes -keyout "$name.key" -out "$name.csr" -subj "$subj"
	quiet openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -set_serial "0x$(openssl rand -hex 16)" \
		-days 825 -sha256 -extfile "$ext" -out "$name.crt"
	rm -f "$name.csr"
}

subj="/O=tether test/CN=localhost" ext=server.ext issue server ec -pkeyopt ec_paramgen_curve:P-256
subj="/O=tether test/CN=$thing" ext=device.ext issue device-ec ec -pkeyopt ec_paramgen_curve:P-256
subj="/O=tether test/CN=$thing" ext=device.ext issue device-rsa rsa:2048

rm -f server.ext device.ext
chmod 0600 ./*.key
chmod 0644 ./*.crt
