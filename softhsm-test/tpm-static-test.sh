#!/usr/bin/env bash
# tpm-static-test.sh [ARCH...]: the static (CGO_ENABLED=0) tether for each
# ARCH (default: amd64 arm64 armv7), run under qemu-user for foreign ones, holds its
# device key in a TPM simulator (swtpm on a Unix socket) and fetches
# credentials from the IoT Core simulator:
#   1. tether hsm keygen writes a TSS2 key file (EC P-256, with a PIN)
#   2. tether hsm csr signs a request, which the test CA issues
#   3. tether config check, hsm selftest and credential-process --direct
#      with private_key = "tpm:file=...?device=SOCKET&pin-source=file:PIN"
# swtpm and the simulator run natively; only tether is the foreign binary.
# Needs (Debian): swtpm, openssl, qemu-user-static (softhsm-test/deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
arches=("${@:-amd64 arm64 armv7}")
for need in swtpm:swtpm openssl:openssl qemu-aarch64-static:qemu-user-static qemu-arm-static:qemu-user-static; do
	command -v "${need%%:*}" >/dev/null || { echo "$0: ${need%%:*} missing: apt-get install ${need##*:}" >&2; exit 1; }
done
work=$(mktemp -d /tmp/tether-tpm-static.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	if [ -f "$work/passed" ]; then rm -rf "$work"; else echo "$0: kept $work" >&2; fi
}
trap cleanup EXIT
wait_for() { # wait_for SECONDS CMD...
	local n=$(($1 * 10)); shift
	until "$@" >/dev/null 2>&1; do
		n=$((n - 1)); [ $n -gt 0 ] || { echo "$0: timed out waiting for: $*" >&2; exit 1; }
		sleep 0.1
	done
}

./softhsm-test/pki.sh "$work/pki" gw-0001 >/dev/null
go build -o "$work/iotsim" ./softhsm-test/iotsim
"$work/iotsim" -ca "$work/pki/ca.crt" -cert "$work/pki/server.crt" -key "$work/pki/server.key" \
	-role-alias gateway-role=1h >"$work/iotsim.out" 2>"$work/iotsim.log" &
pids+=($!)
wait_for 10 test -s "$work/iotsim.out"
endpoint=$(head -n1 "$work/iotsim.out")

for arch in ${arches[*]}; do
	echo "== static tether for $arch against swtpm"
	d=$work/$arch
	mkdir -p "$d/tpm"
	case $arch in
	amd64) run=() goarm= ;;
	arm64) run=(qemu-aarch64-static) goarm= ;;
	armv7) run=(qemu-arm-static) goarm=7 ;;
	*) echo "$0: unknown arch $arch" >&2; exit 2 ;;
	esac
	goarch=$arch; [ "$arch" = armv7 ] && goarch=arm
	CGO_ENABLED=0 GOOS=linux GOARCH=$goarch GOARM=$goarm go build -trimpath -ldflags '-s -w' -o "$d/tether" ./agent/cmd/tether
	! grep -q 'ld-linux' "$d/tether" || { echo "$0: $d/tether names a dynamic loader: not static" >&2; exit 1; }
	tether() { "${run[@]}" "$d/tether" "$@"; }

	swtpm socket --tpm2 --tpmstate dir="$d/tpm" --server type=unixio,path="$d/tpm.sock" \
		--ctrl type=unixio,path="$d/ctrl.sock" --flags not-need-init,startup-clear 2>"$d/swtpm.log" &
	pids+=($!)
	wait_for 10 test -S "$d/tpm.sock"
	(umask 077 && echo 0420 >"$d/pin")
	key="tpm:file=$d/device.tss2?device=$d/tpm.sock&pin-source=file:$d/pin"

	tether hsm keygen --key "$key" --type ec-p256 >"$d/device.pub"
	tether hsm csr --key "$key" --subject "CN=gw-0001" >"$d/device.csr"
	printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature" "extendedKeyUsage=clientAuth" >"$d/device.ext"
	openssl x509 -req -in "$d/device.csr" -CA "$work/pki/ca.crt" -CAkey "$work/pki/ca.key" \
		-set_serial "0x$(openssl rand -hex 16)" -days 30 -sha256 -extfile "$d/device.ext" -out "$d/device.crt" 2>"$d/openssl.log"
	cat >"$d/tether.toml" <<CONF
[identity]
thing_name  = "gw-0001"
certificate = "$d/device.crt"
private_key = "$key"

[aws]
region              = "eu-west-1"
credential_endpoint = "$endpoint"
role_alias          = "gateway-role"
ca_file             = "$work/pki/ca.crt"

[serve]
socket = "$d/tether.sock"

[state]
path = "$d/state.db"
CONF
	tether version
	tether config check -c "$d/tether.toml" >/dev/null
	tether hsm selftest --key "$key" --certificate "$d/device.crt" --count 5
	tether hsm list --tpm "$d/tpm.sock"
	tether credential-process --direct -c "$d/tether.toml" >"$d/creds.json"
	grep -q '"AccessKeyId"' "$d/creds.json" || { echo "$0: $arch: no credentials: $(cat "$d/creds.json")" >&2; exit 1; }
	echo "$arch: credentials fetched with the TPM key ($(stat -c %s "$d/tether") bytes static)"
done
touch "$work/passed"
echo "tpm static: PASS"
