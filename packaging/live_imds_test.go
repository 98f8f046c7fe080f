package packaging

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestLiveSystemdIMDS ensures that the .deb's agent, under systemd as PID 1
// with its hardening, serves the IMDS endpoint, and that its allow lists
// need the local-endpoints.conf drop-in (netlink for sock_diag) and
// workloads.conf (PrivateUsers= off): under the bare unit a listed user is refused and the
// journal says which drop-in to install; with them the listed user is
// served and another refused. Clients are curl on the host, whose network
// the root shares, run with the root's users' uids. No token or secret
// reaches the journal.
func TestLiveSystemdIMDS(t *testing.T) {
	current, _ := liveDebs(t)
	_, err := exec.LookPath("curl")
	require.NoError(t, err, "curl missing: install the Debian package curl (make deps)")
	// The same package set as TestLiveSystemd, so both use one cached root.
	r, iot := bootLive(t, "softhsm2")
	r.Run(t, "useradd", "alice")
	r.Run(t, "useradd", "bob")
	alice := strings.TrimSpace(r.Run(t, "id", "-u", "alice"))
	bob := strings.TrimSpace(r.Run(t, "id", "-u", "bob"))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cfg := installWithPEMKey(t, r, iot, current, fmt.Sprintf("\n[serve]\nimds_endpoint = \"127.0.0.1:%d\"\nallow_uids = [0, %s]\n", port, alice))
	r.WriteFile(t, "/etc/tether/tether.toml", []byte(cfg), 0o644)

	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	// imds asks for a token and then for the device role's credentials, as
	// uid, and returns the last status and body.
	imds := func(uid string) (string, string) {
		t.Helper()
		curl := func(args ...string) (string, string) {
			argv := append([]string{"--reuid=" + uid, "--regid=" + uid, "--clear-groups", "curl", "-s", "-m", "10", "-w", "\n%{http_code}"}, args...)
			cmd := exec.Command("setpriv", argv...)
			cmd.Env = []string{"PATH=/usr/bin:/bin"}
			out, err := cmd.Output()
			require.NoError(t, err, string(out))
			i := strings.LastIndexByte(string(out), '\n')
			return string(out[i+1:]), string(out[:i])
		}
		code, tok := curl("-X", "PUT", "-H", "X-aws-ec2-metadata-token-ttl-seconds: 60", base+"/latest/api/token")
		if code != "200" {
			return code, tok
		}
		return curl("-H", "X-aws-ec2-metadata-token: "+tok, base+"/latest/meta-data/iam/security-credentials/device")
	}

	r.Systemctl(t, "enable", "--now", "tether.socket", "tether.service")
	require.Equal(t, "active", r.Show(t, "tether.service", "ActiveState"))
	code, body := imds(alice)
	assert.Equal(t, "403", code, "under the bare unit the owner of a TCP peer is unknown: %s", body)
	assert.Contains(t, r.Journal(t, "tether.service"), "local-endpoints.conf")

	r.Run(t, "mkdir", "-p", "/etc/systemd/system/tether.service.d")
	// workloads.conf for PrivateUsers=no: inside the unit's user namespace
	// every other user's socket reads as nobody's.
	r.Run(t, "cp", "/usr/share/doc/tether/examples/local-endpoints.conf", "/usr/share/doc/tether/examples/workloads.conf",
		"/etc/systemd/system/tether.service.d/")
	r.Systemctl(t, "daemon-reload")
	r.Systemctl(t, "restart", "tether.service")
	require.Equal(t, "active", r.Show(t, "tether.service", "ActiveState"))
	code, body = imds(alice)
	require.Equal(t, "200", code, body)
	assert.Contains(t, body, `"Type": "AWS-HMAC"`)
	code, _ = imds(bob)
	assert.Equal(t, "403", code, "bob is not in the allow list")
	code, _ = imds("0")
	assert.Equal(t, "200", code)

	var creds struct{ SecretAccessKey, Token string }
	code, body = imds("0")
	require.Equal(t, "200", code)
	require.NoError(t, json.Unmarshal([]byte(body), &creds))
	journal := r.Run(t, "journalctl", "--no-pager", "-b", "-o", "verbose")
	assert.NotContains(t, journal, creds.SecretAccessKey)
	assert.NotContains(t, journal, creds.Token)
	assert.Contains(t, journal, "IMDS endpoint refused a local peer")

	// A port below 1024 (as 169.254.169.254:80 is) needs the drop-in's
	// commented lines: without them the agent cannot listen.
	low := 0
	for p := 1000; p > 900 && low == 0; p-- {
		if ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p)); err == nil {
			ln.Close()
			low = p
		}
	}
	require.NotZero(t, low, "no free port from 901 to 1000")
	r.WriteFile(t, "/etc/tether/tether.toml", []byte(strings.Replace(cfg, fmt.Sprintf(":%d", port), fmt.Sprintf(":%d", low), 1)), 0o644)
	base = fmt.Sprintf("http://127.0.0.1:%d", low)
	r.Exec(context.Background(), "systemctl", "restart", "tether.service")
	r.WaitFor(t, 30*time.Second, "the agent to fail to listen", func() bool {
		return strings.Contains(r.Journal(t, "tether.service"), fmt.Sprintf("cannot listen on 127.0.0.1:%d", low))
	})
	assert.NotEqual(t, "active", r.Show(t, "tether.service", "ActiveState"))
	r.Run(t, "sed", "-i", `s/^#\(CapabilityBoundingSet\|AmbientCapabilities\|PrivateUsers\)/\1/`, "/etc/systemd/system/tether.service.d/local-endpoints.conf")
	r.Systemctl(t, "daemon-reload")
	r.Systemctl(t, "restart", "tether.service")
	require.Equal(t, "active", r.Show(t, "tether.service", "ActiveState"))
	code, body = imds(alice)
	assert.Equal(t, "200", code, body)
}
