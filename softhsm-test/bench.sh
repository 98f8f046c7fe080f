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
	# The figures, and the lines a benchmark logs (a failure's reason).
	go test -run '^$' -count=1 "$@" 2>&1 | grep -E '^(Benchmark|ok|FAIL|---|panic)|^ +[A-Za-z0-9_]+\.go:[0-9]+: ' | tee -a "$out"
}
# The agent's process benchmarks measure the release build (make build, which
# make bench runs first) and the static binaries.
make -s static >/dev/null
export TETHER_BIN="$PWD/bin/tether" TETHER_DIST="$PWD/dist"
# The fleet simulation's table and plot go beside the figures.
export TETHER_BENCH_DIR="$(cd "$(dirname "$out")" && pwd)"
# p11kit_share: what the PKCS#11-through-p11-kit path (hsm/p11rpc and
# hsm's p11-kit backend) takes of the static arm64 binary, from its symbol
# table; the arm64 binary's budget is 10 MB (sizes above).
p11kit_share() {
	local tmp
	tmp=$(mktemp -d)
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 go build -trimpath -ldflags '-s -w' -o "$tmp/stripped" ./agent/cmd/tether
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 go build -trimpath -o "$tmp/unstripped" ./agent/cmd/tether
	go tool nm -size "$tmp/unstripped" | awk -v total="$(stat -c %s "$tmp/stripped")" '
		$4 ~ /hsm\/p11rpc\./ || $4 ~ /tether\/hsm\.(\(\*)?(rpc|tableBlock|dialP11Kit|openP11Kit|signRequest|parseECPoint|keygenArgs|curveOf)/ { s += $2 }
		END { printf "static-arm64 p11kit-path %d bytes of symbols (%.2f%% of the stripped binary)\n", s, 100*s/total }' | tee -a "$out"
	rm -rf "$tmp"
}

# module_sizes: what each dependency (and tether itself) takes of the static
# arm64 binary built the way `make static` builds it: its symbols' bytes
# (text, read-only data, data) from `go tool nm -size` of an unstripped
# build. The stripped file is larger than the sum (pclntab, type links and
# 64 KB segment alignment add ~70 %), so a module's real cost is about
# 1.7x its symbols; docs/footprint.md has the with/without builds.
module_sizes() {
	local tmp
	tmp=$(mktemp -d)
	# shellcheck disable=SC2046 # the flags are words
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 go build -trimpath -tags "$(make -s print-GOTAGS)" $(make -s print-COLDFLAGS) \
		-o "$tmp/unstripped" ./agent/cmd/tether
	echo "== static arm64 symbols by module (KB; Makefile flags, unstripped)" | tee -a "$out"
	go tool nm -size "$tmp/unstripped" | awk '
		$3 !~ /^[Bb]$/ && $2 < 1000000 {
			n = $4; sub(/^\(\*?/, "", n); sub(/\[.*/, "", n)
			if (n ~ /^(go:|type:)/) { m = "runtime metadata (go:, type:)" }
			else if (n ~ /^main\./) { m = "github.com/tetherd/tether" }
			else if (n ~ /^[^\/.]+\.[^\/]+\//) {
				# the package: up to the first dot after the last slash;
				# the module: its first three elements (five for the SDK
				# services, credential providers and features)
				i = match(n, /\/[^\/]*$/); j = index(substr(n, i + 1), ".")
				k = split(substr(n, 1, j ? i + j - 1 : length(n)), p, "/")
				depth = n ~ /^github.com\/aws\/aws-sdk-go-v2\/(service|credentials|feature)\// ? 5 : 3
				m = p[1]
				for (i = 2; i <= depth && i <= k; i++) m = m "/" p[i]
			} else { m = "standard library" }
			s[m] += $2; t += $2
		}
		END { for (m in s) if (s[m] >= 20000) printf "%8.1f %s\n", s[m] / 1000, m; printf "%8.1f total\n", t / 1000 }' |
		sort -rn | tee -a "$out"
	rm -rf "$tmp"
}

# BenchmarkRolesAnywhere compares with the IAM Roles Anywhere credential
# helper's `serve`, which is not part of tether and is never built here:
# RAH_BIN names its binary, built outside this tree.
if [ -z "${RAH_BIN:-}" ]; then
	echo "BenchmarkRolesAnywhere: skipped: RAH_BIN is not set (build github.com/aws/rolesanywhere-credential-helper outside this tree; RAH_BIN=/path/to/aws_signing_helper make bench)" | tee -a "$out"
fi
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
run -bench . -timeout 30m ./softhsm-test/...
cat "$TETHER_BENCH_DIR/fleet.md" | tee -a "$out"
echo "fleet plot: $TETHER_BENCH_DIR/fleet.png" | tee -a "$out"
p11kit_share
module_sizes
echo "figures written to $out"
