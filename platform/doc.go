// Package platform adapts tether to the service manager it runs under:
// systemd readiness and watchdog notifications, socket activation, the
// directories systemd creates for the service, logging that journald
// classifies by priority, and signal handling.
//
// Everything here degrades to a no-op or a plain fallback outside systemd, so
// the same binary runs under systemd, BusyBox init, procd, s6 or a shell.
package platform
