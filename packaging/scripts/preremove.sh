#!/bin/sh
# tether package: before removal (deb/ipk prerm, rpm %preun, apk
# pre-deinstall). On an upgrade (deb "upgrade", rpm 1) the agent keeps
# running and the new package's postinstall restarts it; on removal it is
# stopped and disabled.
set -e
case "${1:-}" in
upgrade | failed-upgrade | 1) exit 0 ;;
esac
if [ -d /run/systemd/system ]; then
	systemctl --no-reload disable --now tether.service tether.socket >/dev/null 2>&1 || true
fi
exit 0
