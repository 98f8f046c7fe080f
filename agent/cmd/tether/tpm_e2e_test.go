package main

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/agent/agenttest"
	"github.com/tetherd/tether/hsm/tpm/tpmtest"
)

// TestTPMIdentityEndToEnd follows an operator with a TPM: tether hsm keygen
// writes a TSS2 key file, hsm csr signs a request that the test CA issues,
// config check accepts the tpm: reference, credential-process --direct and
// the agent fetch credentials with it from the simulator, the agent seals
// its state with the TPM and serves it again after a kill -9, and a wrong
// PIN is one line, exit 2, and one authorisation failure in the TPM.
// swtpm serves one connection at a time, so no two commands overlap.
func TestTPMIdentityEndToEnd(t *testing.T) {
	sim := tpmtest.Start(t)
	e := agenttest.New(t, time.Hour, "")
	pin := filepath.Join(e.Dir, "tpm-pin")
	require.NoError(t, os.WriteFile(pin, []byte("2468\n"), 0o600))
	ref := fmt.Sprintf("tpm:file=%s?device=%s&pin-source=file:%s", filepath.Join(e.Dir, "device.tss2"), sim.Socket, pin)

	code, out, stderr := tether(t, nil, "hsm", "keygen", "--key", ref, "--type", "ec-p256")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stderr, "usable by this TPM only")
	blk, _ := pem.Decode([]byte(out))
	require.NotNil(t, blk, out)

	code, out, stderr = tether(t, nil, "hsm", "csr", "--key", ref, "--subject", "CN="+agenttest.ThingName)
	require.Equal(t, 0, code, stderr)
	blk, _ = pem.Decode([]byte(out))
	require.NotNil(t, blk, out)
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	require.NoError(t, err)
	require.NoError(t, csr.CheckSignature())
	cert, err := e.Sim.PKI.Sign(agenttest.ThingName, csr.PublicKey)
	require.NoError(t, err)
	certFile := filepath.Join(e.Dir, "tpm-device.crt")
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o644))
	e.WriteConfig("", e.KeyFile, ref, e.CertFile, certFile)

	code, _, stderr = tether(t, nil, "config", "check", "-c", e.Config)
	require.Equal(t, 0, code, stderr)
	// A PIN that is a systemd credential cannot be read outside the
	// service: the check says so instead of failing or guessing.
	e.WriteConfig("", e.KeyFile, strings.Replace(ref, "file:"+pin, "credential:tpm-pin", 1), e.CertFile, certFile)
	code, _, stderr = tether(t, nil, "config", "check", "-c", e.Config)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stderr, "systemd credential tpm-pin")
	e.WriteConfig("", e.KeyFile, ref, e.CertFile, certFile)

	code, out, stderr = tether(t, nil, "hsm", "selftest", "--key", ref, "--certificate", certFile, "--count", "3")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, out, "3 ECDSA-SHA256 signatures verified")

	code, out, stderr = tether(t, nil, "credential-process", "--direct", "-c", e.Config)
	require.Equal(t, 0, code, stderr)
	var pc processCredentials
	require.NoError(t, json.Unmarshal([]byte(out), &pc))
	grants := e.Sim.Grants()
	require.Len(t, grants, 1)
	assert.Equal(t, grants[0].AccessKeyID, pc.AccessKeyID)

	p := startAgent(t, e)
	first := served(t, e.Socket, "device")
	// A reload that leaves the identity alone keeps the open key: swtpm
	// serves one connection, so reopening it would stall the reload.
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGHUP))
	e.WaitNotify("READY=1")
	assert.Equal(t, *first, *served(t, e.Socket, "device"))
	kill9Sealed(t, p, e, first)
	p = startAgent(t, e)
	assert.Equal(t, *first, *served(t, e.Socket, "device"), "state sealed with the TPM serves again after a restart")
	require.NoError(t, p.cmd.Process.Kill())
	p.cmd.Wait()

	code, out, _ = tether(t, nil, "hsm", "list", "--tpm", sim.Socket)
	require.Equal(t, 0, code)
	assert.Contains(t, out, "authorisation failures 0 of")

	require.NoError(t, os.WriteFile(pin, []byte("1357\n"), 0o600))
	code, out, stderr = tether(t, nil, "credential-process", "--direct", "-c", e.Config)
	assert.Equal(t, 2, code, stderr)
	assert.Empty(t, out)
	assert.Equal(t, 1, strings.Count(stderr, "\n"), stderr)
	assert.Contains(t, stderr, "not retried")
	assert.NotContains(t, stderr, "1357")
	code, out, _ = tether(t, nil, "hsm", "list", "--tpm", sim.Socket)
	require.Equal(t, 0, code)
	assert.Contains(t, out, "authorisation failures 1 of", "the wrong PIN reached the TPM once")

	sim.Stop()
	code, _, stderr = tether(t, nil, "credential-process", "--direct", "-c", e.Config)
	assert.Equal(t, 1, code, "a TPM that is away is a runtime failure: %s", stderr)
	assert.Equal(t, 1, strings.Count(stderr, "\n"), stderr)
	assert.Contains(t, stderr, sim.Socket)
}

// TestNotPMBuild: a binary built with -tags notpm carries no go-tpm, says
// so in its version, and refuses a tpm: key with that reason (exit 2).
func TestNotPMBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds another binary")
	}
	bin := filepath.Join(t.TempDir(), "tether-notpm")
	build := exec.Command("go", "build", "-tags", "notpm", "-trimpath", "-ldflags=-s -w", "-o", bin, ".")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)
	mods, err := exec.Command("go", "version", "-m", bin).Output()
	require.NoError(t, err)
	assert.NotContains(t, string(mods), "go-tpm")
	out, err = exec.Command(bin, "version").Output()
	require.NoError(t, err)
	assert.Contains(t, string(out), "tpm no (built with -tags notpm)")

	e := agenttest.New(t, time.Hour, "")
	e.WriteConfig("", e.KeyFile, "tpm:handle=0x81000002?device="+e.Dir)
	for _, args := range [][]string{{"config", "check"}, {"credential-process", "--direct"}} {
		cmd := exec.Command(bin, append(args, "-c", e.Config)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err = cmd.Run()
		var ee *exec.ExitError
		require.ErrorAs(t, err, &ee, "%v", args)
		assert.Equal(t, 2, ee.ExitCode(), stderr.String())
		assert.Contains(t, stderr.String(), "not in this binary")
	}
}
