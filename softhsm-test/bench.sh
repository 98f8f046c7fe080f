#!/usr/bin/env bash
# make bench: every figure is measured next to a baseline in the same run and
# reported as a ratio, because the machines are shared and noisy. Nothing here
# asserts a time; see each Benchmark's doc comment for what it compares.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${BENCH_OUT:-bench.out}
: > "$out"
run() {
	echo "== $*" | tee -a "$out"
	go test -run '^$' -count=1 "$@" 2>&1 | grep -E '^(Benchmark|ok|FAIL|---|panic)' | tee -a "$out"
}
# static_sizes: the CGO_ENABLED=0 binaries as `make static` builds them
# (stripped), and what the PKCS#11-through-p11-kit path (hsm/p11rpc and hsm's
# p11-kit backend) takes of the arm64 one, from its symbol table. The arm64
# binary's budget is 10 MB.
static_sizes() {
	local tmp a f size
	tmp=$(mktemp -d)
	echo "== static binary sizes (bytes, stripped)" | tee -a "$out"
	for a in amd64 arm64 armv7; do
		f="$tmp/tether-linux-$a"
		case $a in
		armv7) CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=7 go build -trimpath -ldflags '-s -w' -o "$f" ./agent/cmd/tether ;;
		*) CGO_ENABLED=0 GOOS=linux GOARCH=$a go build -trimpath -ldflags '-s -w' -o "$f" ./agent/cmd/tether ;;
		esac
		size=$(stat -c %s "$f")
		echo "static-size tether-linux-$a $size bytes ($(awk -v s="$size" 'BEGIN{printf "%.2f MB", s/1e6}'))" | tee -a "$out"
	done
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 go build -trimpath -o "$tmp/unstripped" ./agent/cmd/tether
	go tool nm -size "$tmp/unstripped" | awk -v total="$(stat -c %s "$tmp/tether-linux-arm64")" '
		$4 ~ /hsm\/p11rpc\./ || $4 ~ /tether\/hsm\.(\(\*)?(rpc|tableBlock|dialP11Kit|openP11Kit|signRequest|parseECPoint|keygenArgs|curveOf)/ { s += $2 }
		END { printf "static-size p11kit-path-arm64 %d bytes of symbols (%.2f%% of the stripped binary)\n", s, 100*s/total }' | tee -a "$out"
	rm -rf "$tmp"
}

run -bench . ./credprovider/...
run -bench . ./hsm/...
run -bench . ./store/...
run -bench . ./mqtt/...
run -bench . -timeout 30m ./agent/...
static_sizes
echo "figures written to $out"
