package agent

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/agent/agenttest"
)

// asUser runs Debian's python3 as uid:gid with setpriv and returns what it
// printed. It fails the test when the machine cannot run it.
func asUser(t *testing.T, uid int, script string, args ...string) string {
	t.Helper()
	setpriv, err := exec.LookPath("setpriv")
	require.NoError(t, err, "setpriv missing: install the Debian package util-linux")
	if os.Geteuid() != 0 {
		t.Fatal("this test runs clients as other users with setpriv and needs root (make test runs as root)")
	}
	cmd := exec.Command(setpriv, append([]string{fmt.Sprintf("--reuid=%d", uid), fmt.Sprintf("--regid=%d", uid), "--clear-groups",
		"/usr/bin/python3", "-c", script}, args...)...)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, string(out))
	return string(out)
}

// containerGet is a python client for the container endpoint: it prints the
// HTTP status line.
const containerGet = `import http.client,sys
c=http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]))
c.request("GET", sys.argv[2], headers={"Authorization": sys.argv[3]})
r=c.getresponse()
print(r.status, r.read().decode())`

// TestContainerEndpointAppliesAllowLists ensures that the container endpoint
// finds the owner of each loopback TCP peer through sock_diag and applies
// the global and per-role allow lists to it, as the Unix socket does.
func TestContainerEndpointAppliesAllowLists(t *testing.T) {
	port := agenttest.FreePort(t)
	h := newHarness(t, time.Hour, "")
	h.WriteConfig(`
[[role]]
name     = "narrow"
role_arn = "arn:aws:iam::123456789012:role/narrow"
allow_uids = [0]
`, "[serve]\n", fmt.Sprintf("[serve]\ncontainer_endpoint = \"127.0.0.1:%d\"\nallow_uids = [0, 65533]\n", port))
	require.NoError(t, os.Chmod(h.Dir, 0o755))
	require.NoError(t, os.Chmod(filepath.Dir(h.Dir), 0o755))
	h.start()
	token, err := os.ReadFile(h.Token)
	require.NoError(t, err)
	p := fmt.Sprint(port)

	tests := []struct {
		name string
		uid  int
		path string
		want string
	}{
		{"root, device role", 0, "/2016-11-01/credentialprovider/", "200"},
		{"uid outside the global list", 65534, "/2016-11-01/credentialprovider/", "403"},
		{"uid in the global list, device role", 65533, "/v1/credentials/device", "200"},
		{"uid in the global list, outside the role's", 65533, "/v1/credentials/narrow", "403"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := asUser(t, tt.uid, containerGet, p, tt.path, string(token))
			assert.True(t, strings.HasPrefix(out, tt.want+" "), out)
			if tt.want != "200" {
				assert.Contains(t, out, "peer_not_allowed")
				assert.Contains(t, out, fmt.Sprintf("uid %d", tt.uid))
				assert.NotContains(t, out, "SecretAccessKey")
			} else {
				assert.Contains(t, out, "SecretAccessKey")
			}
		})
	}
	// The narrow role is served to root over TCP too (it was refused to
	// every TCP peer before sock_diag).
	req, err := http.NewRequest(http.MethodGet, "http://127.0.0.1:"+p+"/v1/credentials/narrow", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", string(token))
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "allowed; the simulator has no STS, so no credentials yet")
}
