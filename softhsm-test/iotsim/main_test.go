package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/credprovider"
)

// pki runs softhsm-test/pki.sh into a temporary directory.
func pki(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatal("openssl not found: install the Debian package openssl")
	}
	dir := filepath.Join(t.TempDir(), "pki")
	out, err := exec.Command("../pki.sh", dir, "gw-0001").CombinedOutput()
	require.NoError(t, err, "%s", out)
	return dir
}

// TestPKIScript ensures that softhsm-test/pki.sh makes a PKI the simulator serves and devices authenticate with.
func TestPKIScript(t *testing.T) {
	dir := pki(t)
	for _, f := range []string{"ca", "server", "device-ec", "device-rsa"} {
		st, err := os.Stat(filepath.Join(dir, f+".key"))
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o600), st.Mode().Perm(), f+".key")
		_, err = os.Stat(filepath.Join(dir, f+".crt"))
		require.NoError(t, err)
	}
}

// TestSimulatorProcess ensures that the runnable simulator serves credentials to the EC and RSA device identities pki.sh makes.
//
// TestSimulatorProcess runs the simulator's main over files made by pki.sh
// and fetches credentials with the EC and the RSA device identities.
func TestSimulatorProcess(t *testing.T) {
	dir := pki(t)
	ctx, cancel := context.WithCancel(t.Context())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{
			"-listen", "127.0.0.1:0", "-ca", filepath.Join(dir, "ca.crt"),
			"-cert", filepath.Join(dir, "server.crt"), "-key", filepath.Join(dir, "server.key"),
			"-role-alias", "gateway-role=2h",
		}, pw, io.Discard)
		pw.Close()
	}()
	t.Cleanup(func() {
		cancel()
		assert.NoError(t, <-done)
	})
	line, err := bufio.NewReader(pr).ReadString('\n')
	require.NoError(t, err)
	endpoint := strings.TrimSpace(line)
	assert.True(t, strings.HasPrefix(endpoint, "127.0.0.1:"), endpoint)
	go func() { _, _ = io.Copy(io.Discard, pr) }()

	for _, dev := range []string{"device-ec", "device-rsa"} {
		t.Run(dev, func(t *testing.T) {
			cert, err := tls.LoadX509KeyPair(filepath.Join(dir, dev+".crt"), filepath.Join(dir, dev+".key"))
			require.NoError(t, err)
			p, err := credprovider.NewIoT(credprovider.IoTOptions{
				Endpoint: endpoint, RoleAlias: "gateway-role", ThingName: "gw-0001",
				Certificate: cert, CAFile: filepath.Join(dir, "ca.crt"),
			})
			require.NoError(t, err)
			defer p.CloseIdleConnections()
			start := time.Now()
			c, err := p.Retrieve(t.Context())
			require.NoError(t, err)
			assert.WithinDuration(t, start.Add(2*time.Hour), c.Expires, 5*time.Second)
		})
	}
}

// TestSimulatorUsageErrors ensures that the runnable simulator refuses bad flags with a line that says what to fix.
func TestSimulatorUsageErrors(t *testing.T) {
	dir := pki(t)
	base := []string{"-ca", filepath.Join(dir, "ca.crt"), "-cert", filepath.Join(dir, "server.crt"), "-key", filepath.Join(dir, "server.key")}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"nothing", nil, "required"},
		{"bad lifetime", append(base, "-role-alias", "r=5s"), `-role-alias "r=5s"`},
		{"no name", append(base, "-role-alias", "=1h"), `-role-alias "=1h"`},
		{"key missing", []string{"-ca", filepath.Join(dir, "ca.crt"), "-cert", filepath.Join(dir, "server.crt"), "-key", "/nonexistent", "-role-alias", "r=1h"}, "/nonexistent"},
		{"ca not PEM", []string{"-ca", filepath.Join(dir, "server.key"), "-cert", filepath.Join(dir, "server.crt"), "-key", filepath.Join(dir, "server.key"), "-role-alias", "r=1h"}, "no PEM CERTIFICATE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := run(t.Context(), tc.args, io.Discard, io.Discard)
			require.ErrorIs(t, err, errUsage)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}
