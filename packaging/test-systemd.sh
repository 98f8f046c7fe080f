#!/bin/sh
# test-systemd.sh: make test-systemd. Builds this machine's .deb twice (this tree,
# and the same tree as a lower "previous" version to upgrade from; set
# TETHER_LIVE_PREVIOUS_DEB to a released .deb to upgrade from that instead),
# then runs packaging's TestLive* tests: a Debian 12 root booted with systemd
# as PID 1 under systemd-nspawn (packaging/nspawntest; the debootstrap'd
# root is cached under $TETHER_NSPAWN_CACHE, default ~/.cache/tether/nspawn).
# Skips, saying why, when this machine cannot boot a root: that needs root,
# systemd-nspawn (systemd-container) and debootstrap.
set -eu
cd "$(dirname "$0")/.."
why=""
if [ "$(id -u)" -ne 0 ]; then why="not root (systemd-nspawn and debootstrap need root)"
elif ! command -v systemd-nspawn >/dev/null 2>&1; then why="systemd-nspawn missing: apt-get install systemd-container"
elif ! command -v debootstrap >/dev/null 2>&1; then why="debootstrap missing: apt-get install debootstrap"
fi
if [ -n "$why" ]; then
	echo "make test-systemd: SKIPPED: $why" >&2
	exit 0
fi
case $(dpkg --print-architecture) in
amd64) arch=amd64 ;; arm64) arch=arm64 ;; armhf) arch=armv7 ;;
*) echo "make test-systemd: SKIPPED: no tether package for $(dpkg --print-architecture)" >&2; exit 0 ;;
esac
${MAKE:-make} --no-print-directory dist/tether-pkcs11-linux-$arch bin/nfpm
out=$(mktemp -d /tmp/tether-test-systemd.XXXXXX)
trap 'rm -rf "$out"' EXIT
trap 'exit 1' INT TERM
if [ -z "${TETHER_LIVE_PREVIOUS_DEB:-}" ]; then
	OUT=$out/previous ARCHES=$arch FORMATS=deb TETHER_PKG_VERSION=0.0.0~previous ./packaging/packages.sh >/dev/null
	TETHER_LIVE_PREVIOUS_DEB=$(ls "$out"/previous/*.deb)
fi
OUT=$out/current ARCHES=$arch FORMATS=deb ./packaging/packages.sh >/dev/null
TETHER_LIVE_DEB=$(ls "$out"/current/*.deb)
export TETHER_LIVE_DEB TETHER_LIVE_PREVIOUS_DEB
echo "make test-systemd: upgrading $(basename "$TETHER_LIVE_PREVIOUS_DEB") to $(basename "$TETHER_LIVE_DEB") in a booted Debian 12 root"
${GO:-go} test -count=1 -timeout 20m -v -run 'TestLive' ./packaging/ 2>&1 | tee "$out/test.log" |
	grep -E '^\s*(=== RUN|--- |PASS|FAIL|ok|\s+live_test.go)' || true
grep -q '^ok' "$out/test.log" || { echo "make test-systemd: FAILED (log above)" >&2; exit 1; }
