#!/bin/sh
# test-release.sh: make test-release. Two `make release` runs of this commit,
# each in a clone of its own at a different path (so a build path that leaks
# into a binary shows), must give the same SHA256SUMS. The Go build cache is
# shared, as Go's cache is content-addressed (a cached compile is the one a
# fresh compile makes); TETHER_RELEASE_FRESH_CACHE=1 gives the second run an
# empty cache (much slower) to check that too.
set -eu
cd "$(dirname "$0")/.."
work=$(mktemp -d /tmp/tether-release.XXXXXX)
trap 'rm -rf "$work"' EXIT
trap 'exit 1' INT TERM
for run in a bb; do
	git clone -q "$PWD" "$work/$run"
	git -C "$work/$run" checkout -q "$(git rev-parse HEAD)"
done
echo "make test-release: first release build"
(cd "$work/a" && ${MAKE:-make} --no-print-directory release >"$work/a.log" 2>&1) ||
	{ tail -20 "$work/a.log" >&2; echo "make test-release: the first make release failed" >&2; exit 1; }
echo "make test-release: second release build"
if [ "${TETHER_RELEASE_FRESH_CACHE:-}" = 1 ]; then export GOCACHE="$work/gocache"; fi
(cd "$work/bb" && ${MAKE:-make} --no-print-directory release >"$work/bb.log" 2>&1) ||
	{ tail -20 "$work/bb.log" >&2; echo "make test-release: the second make release failed" >&2; exit 1; }
if ! diff -u "$work/a/dist/SHA256SUMS" "$work/bb/dist/SHA256SUMS"; then
	echo "make test-release: FAILED: the two release builds differ (above)" >&2
	exit 1
fi
echo "make test-release: identical: $(wc -l <"$work/a/dist/SHA256SUMS") files, SHA256SUMS $(sha256sum "$work/a/dist/SHA256SUMS" | cut -c1-16)"
