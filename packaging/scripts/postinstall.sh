#!/bin/sh
# tether package: after install or upgrade (deb postinst, rpm %post, apk
# post-install/post-upgrade, ipk postinst). One script for four formats,
# told apart by their arguments:
#   deb/ipk  configure [OLD-VERSION]     rpm  1 (install) | 2 (upgrade)
#   apk      NEW-VERSION [OLD-VERSION]   (two arguments: post-upgrade)
# It creates the account, fixes ownership, enables nothing, restarts an agent
# that is running (an upgrade), and says what to do next on a first install.
set -e

case "${1:-}" in
abort-upgrade | abort-remove | abort-deconfigure) action=upgrade ;;
configure) if [ -n "${2:-}" ]; then action=upgrade; else action=install; fi ;;
2) action=upgrade ;;
*) if [ -n "${2:-}" ]; then action=upgrade; else action=install; fi ;;
esac

# The account: systemd-sysusers reads the shipped sysusers.d file; without
# systemd (OpenWrt, Alpine with OpenRC) the same account via adduser.
if command -v systemd-sysusers >/dev/null 2>&1; then
	systemd-sysusers /usr/lib/sysusers.d/tether.conf
elif ! getent passwd tether >/dev/null 2>&1; then
	if adduser --help 2>&1 | grep -q -- '--system'; then
		# Debian's adduser
		adduser --system --group --home /var/lib/tether --no-create-home \
			--shell /usr/sbin/nologin --gecos "tether agent" tether >/dev/null
	elif command -v useradd >/dev/null 2>&1; then
		# shadow-utils (RPM distributions without systemd-sysusers)
		useradd --system --user-group --home-dir /var/lib/tether --no-create-home \
			--shell /sbin/nologin --comment "tether agent" tether
	elif command -v adduser >/dev/null 2>&1 && command -v addgroup >/dev/null 2>&1; then
		# BusyBox adduser/addgroup (Alpine, OpenWrt builds that have them)
		getent group tether >/dev/null 2>&1 || addgroup -S tether
		adduser -S -D -H -h /var/lib/tether -s /sbin/nologin -G tether -g "tether agent" tether
	else
		echo "tether: no systemd-sysusers, adduser or useradd here: create the system group and user" \
			"tether (home /var/lib/tether, no login shell), then chown tether:tether /var/lib/tether" >&2
	fi
fi

# Directories with their owners and modes, at every install and upgrade (the
# tmpfiles.d file is the source; without systemd the same by hand). The
# configuration file itself is 0644: /etc/tether (0750 root:tether) is what
# keeps others out.
if command -v systemd-tmpfiles >/dev/null 2>&1; then
	systemd-tmpfiles --create /usr/lib/tmpfiles.d/tether.conf || true
else
	mkdir -p /etc/tether /var/lib/tether
	if getent passwd tether >/dev/null 2>&1; then
		chown root:tether /etc/tether && chmod 0750 /etc/tether
		chown tether:tether /var/lib/tether && chmod 0700 /var/lib/tether
	fi
fi
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
	if [ "$action" = upgrade ]; then
		# Only a running agent is restarted; a stopped or never-enabled one
		# stays as it was. State in /var/lib/tether is kept as it is.
		systemctl try-restart tether.service || true
	fi
fi

if [ "$action" = install ]; then
	cat <<'MSG'
tether is installed and not enabled: it has no identity yet. Next:
  1. put the device certificate and key in /etc/tether (key 0600, owner tether),
     or point private_key at a pkcs11: URI, and edit /etc/tether/tether.toml
  2. tether config check -c /etc/tether/tether.toml
  3. systemctl enable --now tether.socket tether.service
  A PKCS#11 PIN: cp /usr/share/doc/tether/examples/pkcs11-pin.conf \
     /etc/systemd/system/tether.service.d/ (see /usr/share/doc/tether/systemd.md)
  Programs in group tether may then use /run/tether/tether.sock.
MSG
fi
exit 0
