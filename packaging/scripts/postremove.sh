#!/bin/sh
# tether package: after removal (deb/ipk postrm, rpm %postun, apk
# post-deinstall). "purge" (deb) removes the state: the credential cache and
# MQTT outbox in /var/lib/tether and the runtime directory; dpkg removes the
# conffile itself. Files the operator put in /etc/tether (certificate, key,
# PIN) are an identity, not state: they are kept and named. The account
# stays, as Debian does for system users, so files it owns keep an owner.
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
if [ "${1:-}" = purge ]; then
	rm -rf /var/lib/tether /run/tether
	if [ -d /etc/tether ]; then
		rmdir /etc/tether 2>/dev/null ||
			echo "tether: kept /etc/tether (it holds files the package did not install: $(ls -A /etc/tether | tr '\n' ' '))"
	fi
fi
exit 0
