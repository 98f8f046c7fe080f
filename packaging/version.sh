#!/bin/sh
# version.sh FORMAT: the package version for FORMAT (deb, rpm, ipk, apk) from
# `git describe`: a tag vX.Y.Z gives X.Y.Z; N commits after it (or after the
# start, with no tag yet: 0.0.0) give X.Y.Z+gitN.gHASH, which sorts after
# X.Y.Z and before the next tag in dpkg, rpm and opkg. apk allows only
# digits in a suffix: X.Y.Z_gitN. $TETHER_PKG_VERSION, when set, wins (tests build an
# "older" package with it).
set -eu
fmt=${1:?usage: version.sh deb|rpm|ipk|apk}
if [ -n "${TETHER_PKG_VERSION:-}" ]; then echo "$TETHER_PKG_VERSION"; exit 0; fi
if d=$(git describe --tags --long --match 'v[0-9]*' 2>/dev/null); then
	base=${d%-*-g*}; base=${base#v}
	rest=${d#"v$base"-}; n=${rest%%-g*}; hash=${rest#*-g}
else
	base=0.0.0
	n=$(git rev-list --count HEAD 2>/dev/null || echo 0)
	hash=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
fi
if [ "$n" = 0 ]; then echo "$base"; exit 0; fi
case $fmt in
apk) echo "${base}_git$n" ;;
*) echo "$base+git$n.g$hash" ;;
esac
