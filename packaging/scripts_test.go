package packaging

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/tetherd/tether/packaging/nspawntest"
)

// TestLiveMaintainerScripts ensures that the one set of maintainer scripts
// does the right thing for each format's way of calling them: dpkg's
// "configure [OLD]", "upgrade", "remove", "purge"; rpm's 1/2 and 0/1; apk's
// one- and two-argument post-install/post-upgrade. It runs them in a booted
// root (so /run/systemd/system exists) with systemctl, systemd-sysusers and
// systemd-tmpfiles replaced by stubs that record their arguments. (The .deb
// itself is installed, upgraded and purged for real by TestLiveSystemd.)
func TestLiveMaintainerScripts(t *testing.T) {
	liveDebs(t)
	r := nspawntest.Boot(t, nspawntest.Options{Packages: []string{"softhsm2"}})
	for _, s := range []string{"postinstall.sh", "preremove.sh", "postremove.sh"} {
		r.CopyIn(t, "scripts/"+s, "/root/scripts/"+s)
	}
	stub := []byte("#!/bin/sh\necho \"$(basename \"$0\") $*\" >>/root/calls\n")
	for _, s := range []string{"systemctl", "systemd-sysusers", "systemd-tmpfiles"} {
		r.WriteFile(t, "/root/stubs/"+s, stub, 0o755)
	}
	run := func(t *testing.T, script string, args ...string) (calls, out string) {
		t.Helper()
		os.Remove(r.Path("/root/calls"))
		argv := append([]string{"env", "PATH=/root/stubs:/usr/sbin:/usr/bin:/sbin:/bin", "sh", "/root/scripts/" + script}, args...)
		o, err := r.Exec(context.Background(), argv...)
		assert.NoError(t, err, "%s %v: %s", script, args, o)
		b, _ := os.ReadFile(r.Path("/root/calls"))
		return string(b), string(o)
	}
	const restart = "systemctl try-restart tether.service"
	const stop = "systemctl --no-reload disable --now tether.service tether.socket"
	for _, tc := range []struct {
		name, script string
		args         []string
		want, never  []string
		says         string
	}{
		{"deb install", "postinstall.sh", []string{"configure", ""}, []string{"systemd-sysusers /usr/lib/sysusers.d/tether.conf", "systemd-tmpfiles --create /usr/lib/tmpfiles.d/tether.conf", "systemctl daemon-reload"}, []string{restart, "enable", "start"}, "not enabled"},
		{"deb upgrade", "postinstall.sh", []string{"configure", "0.9.0-1"}, []string{"systemd-sysusers", restart}, []string{"enable"}, ""},
		{"rpm install", "postinstall.sh", []string{"1"}, []string{"systemd-sysusers"}, []string{restart, "enable"}, "not enabled"},
		{"rpm upgrade", "postinstall.sh", []string{"2"}, []string{restart}, []string{"enable"}, ""},
		{"apk post-install", "postinstall.sh", []string{"1.0.0-r1"}, []string{"systemd-sysusers"}, []string{restart}, "not enabled"},
		{"apk post-upgrade", "postinstall.sh", []string{"1.1.0-r1", "1.0.0-r1"}, []string{restart}, nil, ""},
		{"deb prerm upgrade", "preremove.sh", []string{"upgrade", "1.1.0-1"}, nil, []string{stop}, ""},
		{"deb prerm remove", "preremove.sh", []string{"remove"}, []string{stop}, nil, ""},
		{"rpm preun upgrade", "preremove.sh", []string{"1"}, nil, []string{stop}, ""},
		{"rpm preun erase", "preremove.sh", []string{"0"}, []string{stop}, nil, ""},
		{"apk pre-deinstall", "preremove.sh", []string{"1.0.0-r1"}, []string{stop}, nil, ""},
		{"deb postrm remove", "postremove.sh", []string{"remove"}, []string{"systemctl daemon-reload"}, nil, ""},
		{"rpm postun erase", "postremove.sh", []string{"0"}, []string{"systemctl daemon-reload"}, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls, out := run(t, tc.script, tc.args...)
			for _, w := range tc.want {
				assert.Contains(t, calls, w)
			}
			for _, n := range tc.never {
				assert.NotContains(t, calls, n)
			}
			if tc.says != "" {
				assert.Contains(t, out, tc.says)
			} else {
				assert.NotContains(t, out, "not enabled")
			}
		})
	}

	t.Run("without systemd's tools: Debian's adduser makes the account and the directories", func(t *testing.T) {
		// A PATH with the shell tools the script uses and adduser, but no
		// systemd-sysusers, systemd-tmpfiles or systemctl.
		r.Run(t, "mkdir", "-p", "/root/nosd")
		for _, tool := range []string{"sh", "getent", "adduser", "mkdir", "chown", "chmod", "grep", "cat", "ls", "tr", "rmdir"} {
			r.Run(t, "sh", "-c", "ln -sf \"$(command -v "+tool+")\" /root/nosd/"+tool)
		}
		r.Run(t, "sh", "-c", "getent passwd tether && userdel tether; getent group tether && groupdel tether; rm -rf /etc/tether /var/lib/tether; true")
		out, err := r.Exec(context.Background(), "env", "PATH=/root/nosd", "sh", "/root/scripts/postinstall.sh", "configure", "")
		assert.NoError(t, err, "%s", out)
		assert.Contains(t, r.Run(t, "getent", "passwd", "tether"), ":/var/lib/tether:/usr/sbin/nologin")
		assert.Equal(t, "750 root:tether", strings.TrimSpace(r.Run(t, "stat", "-c", "%a %U:%G", "/etc/tether")))
		assert.Equal(t, "700 tether:tether", strings.TrimSpace(r.Run(t, "stat", "-c", "%a %U:%G", "/var/lib/tether")))
	})

	t.Run("deb purge removes state and keeps the operator's identity", func(t *testing.T) {
		r.Run(t, "mkdir", "-p", "/var/lib/tether", "/etc/tether")
		r.WriteFile(t, "/var/lib/tether/state.db", []byte("state"), 0o600)
		r.WriteFile(t, "/etc/tether/device.crt", []byte("cert"), 0o644)
		_, out := run(t, "postremove.sh", "purge")
		assert.NoDirExists(t, r.Path("/var/lib/tether"))
		assert.FileExists(t, r.Path("/etc/tether/device.crt"))
		assert.Contains(t, out, "kept /etc/tether")
		assert.True(t, strings.Contains(out, "device.crt"), out)
	})
	t.Run("rpm erase keeps state (rpm has no purge)", func(t *testing.T) {
		r.Run(t, "mkdir", "-p", "/var/lib/tether")
		r.WriteFile(t, "/var/lib/tether/state.db", []byte("state"), 0o600)
		run(t, "postremove.sh", "0")
		assert.FileExists(t, r.Path("/var/lib/tether/state.db"))
	})
}
