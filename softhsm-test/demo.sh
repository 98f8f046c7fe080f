#!/usr/bin/env bash
# make demo: tether's main job on this machine, against the local IoT Core
# simulator and mosquitto, with the device key in a SoftHSM token.
#
#  1. a test PKI and a SoftHSM token whose key never leaves it; a CSR signed
#     in the token becomes the device certificate
#  2. the IoT credentials provider simulator (real mTLS on 127.0.0.1)
#  3. `tether credential-process --direct`: one fetch, no agent
#  4. `tether run`: status, credentials through credential-process and the
#     container endpoint, a refresh of 40-second credentials
#  5. one MQTT session: a publish through the agent and its echo
#
# Secrets are masked in everything printed. Everything started is stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
tether=$root/bin/tether
demo=$root/.demo
rm -rf "$demo"
mkdir -p "$demo"/{run,state}
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# mask hides secrets in credential JSON: the key id's first 4 characters stay.
mask() {
	/usr/bin/python3 -c '
import json, sys
for line in sys.stdin:
    d = json.loads(line)
    for k in ("SecretAccessKey", "SessionToken", "Token"):
        if k in d: d[k] = "****(%d chars)" % len(d[k])
    if "AccessKeyId" in d: d["AccessKeyId"] = d["AccessKeyId"][:4] + "****"
    print(json.dumps(d))'
}
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { # wait_for SECONDS CMD...: until CMD succeeds
	local n=$(($1 * 10)); shift
	until "$@" >/dev/null 2>&1; do
		n=$((n - 1)); [ $n -gt 0 ] || { echo "demo: timed out waiting for: $*" >&2; exit 1; }
		sleep 0.1
	done
}

say "1. test PKI and a SoftHSM token (the device key is generated inside it)"
./softhsm-test/pki.sh "$demo/pki" gw-0001 >/dev/null
export SOFTHSM2_CONF=$demo/token/softhsm2.conf
# token.sh's stderr stays visible: it names what is missing (e.g. softhsm2).
uri=$(./softhsm-test/token.sh "$demo/token" tether "$demo/token/pin" device ec-p256)
echo "key: ${uri%%\?*}?module-path=…&pin-source=file:… (the PIN stays in its 0600 file)"
"$tether" hsm csr --key "$uri" --subject "CN=gw-0001" >"$demo/device.csr"
openssl x509 -req -in "$demo/device.csr" -CA "$demo/pki/ca.crt" -CAkey "$demo/pki/ca.key" \
	-CAcreateserial -days 30 -out "$demo/device.crt" 2>"$demo/openssl.log" ||
	{ echo "demo: signing the device certificate failed:" >&2; cat "$demo/openssl.log" >&2; exit 1; }
openssl x509 -in "$demo/device.crt" -noout -subject -enddate

say "2. the IoT Core credentials provider simulator"
go build -o "$demo/iotsim" ./softhsm-test/iotsim
"$demo/iotsim" -ca "$demo/pki/ca.crt" -cert "$demo/pki/server.crt" -key "$demo/pki/server.key" \
	-role-alias gateway-role=1h -role-alias short-role=40s >"$demo/iotsim.out" 2>"$demo/iotsim.log" &
pids+=($!)
wait_for 10 test -s "$demo/iotsim.out"
endpoint=$(head -n1 "$demo/iotsim.out")
echo "listening on $endpoint"

write_config() { # write_config FILE ALIAS EXTRA
	cat >"$1" <<EOF
[identity]
thing_name  = "gw-0001"
certificate = "$demo/device.crt"
private_key = "$uri"

[aws]
region              = "eu-west-1"
credential_endpoint = "$endpoint"
role_alias          = "$2"
ca_file             = "$demo/pki/ca.crt"

[serve]
socket     = "$demo/run/tether.sock"
token_file = "$demo/run/token"
$3
[state]
path = "$demo/state/state.db"
EOF
}

say "3. tether credential-process --direct (no agent)"
write_config "$demo/direct.toml" gateway-role ""
"$tether" config check -c "$demo/direct.toml" | sed -n '1p'
"$tether" credential-process --direct -c "$demo/direct.toml" | mask

say "4. the agent: tether run, with 40-second credentials to show refreshes"
cport=$(free_port)
mport=$(free_port)
cat >"$demo/mosquitto.conf" <<EOF
user root
listener $mport 127.0.0.1
cafile $demo/pki/ca.crt
certfile $demo/pki/server.crt
keyfile $demo/pki/server.key
require_certificate true
use_identity_as_username true
allow_anonymous true
EOF
/usr/sbin/mosquitto -c "$demo/mosquitto.conf" 2>"$demo/mosquitto.log" &
pids+=($!)
write_config "$demo/tether.toml" short-role "container_endpoint = \"127.0.0.1:$cport\"

[mqtt]
endpoint = \"127.0.0.1:$mport\"
ca_file  = \"$demo/pki/ca.crt\"
"
"$tether" run -c "$demo/tether.toml" 2>"$demo/tether.log" &
pids+=($!)
wait_for 15 "$tether" credential-process --socket "$demo/run/tether.sock"
"$tether" status --socket "$demo/run/tether.sock"

echo; echo "credential_process = tether credential-process:"
first=$("$tether" credential-process --socket "$demo/run/tether.sock")
echo "$first" | mask
echo; echo "container endpoint (AWS_CONTAINER_CREDENTIALS_FULL_URI, Greengrass TES path):"
/usr/bin/python3 - "$cport" "$demo/run/token" <<'EOF' | mask
import sys, urllib.request
req = urllib.request.Request("http://127.0.0.1:%s/2016-11-01/credentialprovider/" % sys.argv[1],
                             headers={"Authorization": open(sys.argv[2]).read()})
print(urllib.request.urlopen(req).read().decode().strip())
EOF

echo; echo "waiting for a refresh (half-life of 40-second credentials)…"
key() { "$tether" credential-process --socket "$demo/run/tether.sock" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["AccessKeyId"])'; }
firstkey=$(echo "$first" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["AccessKeyId"])')
refreshed() { [ "$(key)" != "$firstkey" ]; }
wait_for 60 refreshed
"$tether" credential-process --socket "$demo/run/tether.sock" | mask
grep -c '"credentials refreshed"\|msg="credentials refreshed"' "$demo/tether.log" | sed 's/^/refreshes logged by the agent: /'

say "5. one MQTT session for the device: publish through the agent, echo through a subscription"
"$tether" mqtt subscribe --socket "$demo/run/tether.sock" --topic 'dt/gw-0001/#' --count 1 >"$demo/echo.out" &
subpid=$!
subscribed() { "$tether" status --json --socket "$demo/run/tether.sock" | /usr/bin/python3 -c 'import json,sys; m=json.load(sys.stdin)["mqtt"]; sys.exit(0 if m["subscribers"]>=1 and m["state"]=="connected" else 1)'; }
wait_for 20 subscribed
echo '{"temperature": 21.5}' | "$tether" mqtt publish --socket "$demo/run/tether.sock" --topic dt/gw-0001/telemetry --qos 1
wait "$subpid"
/usr/bin/python3 -c 'import json,sys,base64; m=json.loads(open(sys.argv[1]).readline()); print("echo on", m["topic"] + ":", base64.b64decode(m["payload"]).decode().strip())' "$demo/echo.out"

say "status"
"$tether" status --socket "$demo/run/tether.sock"
echo; echo "demo done; logs in .demo/"
