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
run -bench . ./credprovider/...
run -bench . ./hsm/...
run -bench . ./store/...
run -bench . ./mqtt/...
run -bench . -timeout 30m ./agent/...
# Static binary sizes with and without TPM 2.0 support (go-tpm), built the
# way `make static` builds them; -tags notpm is the "before".
sizes() {
	local dir
	dir=$(mktemp -d)
	echo "== static binary sizes (bytes, -trimpath -ldflags '-s -w')" | tee -a "$out"
	for arch in amd64 arm64 armv7; do
		local goarch=$arch goarm=
		[ "$arch" = armv7 ] && goarch=arm goarm=7
		CGO_ENABLED=0 GOOS=linux GOARCH=$goarch GOARM=$goarm go build -trimpath -ldflags '-s -w' -o "$dir/tpm" ./agent/cmd/tether
		CGO_ENABLED=0 GOOS=linux GOARCH=$goarch GOARM=$goarm go build -tags notpm -trimpath -ldflags '-s -w' -o "$dir/notpm" ./agent/cmd/tether
		local with without
		with=$(stat -c %s "$dir/tpm") without=$(stat -c %s "$dir/notpm")
		awk -v a="$arch" -v w="$with" -v n="$without" 'BEGIN { printf "static-%s without-tpm %d with-tpm %d (+%d bytes, x%.3f)\n", a, n, w, w - n, w / n }' | tee -a "$out"
	done
	rm -rf "$dir"
}
sizes
echo "figures written to $out"
