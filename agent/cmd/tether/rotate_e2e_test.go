package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/agent"
	"github.com/tetherd/tether/mqtt/fleetprov/fleetprovtest"
)

const rotationSettings = `rotation_template = "gateway-rotate"
retired_topic     = "tether/retired"
fallback          = "0s"
`

// provisioned is a fleet device after `tether provision`, configured to
// rotate with the simulator's rotation template.
func provisioned(t *testing.T) *fleet { return provisionedWith(t, "") }

// provisionedWith is provisioned with the device key at key (a pkcs11:
// URI, or "" for a PEM file).
func provisionedWith(t *testing.T, key string) *fleet {
	t.Helper()
	f := newFleet(t, key)
	f.writeConfigWith(rotationSettings, "")
	code, _, stderr := tether(t, nil, "provision", "-c", f.Config)
	require.Equal(t, 0, code, stderr)
	return f
}

// startAgentEnv starts `tether run` with extra environment and returns the
// process and a channel closed when it exits.
func startAgentEnv(t *testing.T, f *fleet, env ...string) (*exec.Cmd, <-chan struct{}) {
	t.Helper()
	cmd := exec.Command(tetherBin, "run", "-c", f.Config)
	// GOTRACEBACK=all: a SIGQUIT (below) dumps every goroutine.
	cmd.Env = append(append(os.Environ(), "GOTRACEBACK=all"), env...)
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	if p := os.Getenv("TETHER_TEST_AGENT_LOG"); p != "" {
		lf, err := os.Create(p)
		require.NoError(t, err)
		defer lf.Close()
		cmd.Stderr = lf
	}
	require.NoError(t, cmd.Start())
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		running := true
		select {
		case <-exited:
			running = false // killed at a failpoint: the socket is the next agent's
		default:
		}
		if t.Failed() && running {
			// What the agent thought when the test gave up: its status and
			// every goroutine (SIGQUIT), in the log below.
			if st, err := agent.FetchStatus(context.Background(), f.Socket); err == nil {
				b, _ := json.Marshal(st)
				t.Logf("agent status: %s", b)
			}
			if errs := f.prov.Errors(); len(errs) > 0 {
				t.Logf("simulator errors: %v", errs)
			}
			cmd.Process.Signal(syscall.SIGQUIT)
		}
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			// This agent's own pid (never a search by name): SIGQUIT makes
			// the Go runtime dump its goroutines into the log below.
			t.Errorf("the agent did not stop within 20 s of SIGTERM; its goroutines are dumped and it is killed")
			cmd.Process.Signal(syscall.SIGQUIT)
			select {
			case <-exited:
			case <-time.After(5 * time.Second):
				cmd.Process.Kill()
				<-exited
			}
		}
		if t.Failed() {
			t.Logf("agent log:\n%s", stderr.String())
		}
	})
	// This agent's READY=1: a previous agent's may still be queued.
	f.WaitNotifyFrom(cmd.Process.Pid, "READY=1")
	return cmd, exited
}

// rotateThrough starts the agent, with TETHER_FAILPOINT=point unless point
// is "", waits for its MQTT session and asks it to rotate; with a point it
// waits for the agent to kill itself there, starts it again and checks that
// credentials are served at once. It returns when the rotation was asked.
func rotateThrough(t *testing.T, f *fleet, point string) time.Time {
	t.Helper()
	var env []string
	if point != "" {
		env = append(env, "TETHER_FAILPOINT="+point)
	}
	_, exited := startAgentEnv(t, f, env...)
	waitStatus(t, f.Socket, func(st *agent.Status) bool { return st.MQTT != nil && st.MQTT.State == "connected" })
	st := status(t, f.Socket)
	require.True(t, st.Rotation.Enabled, st.Rotation.Disabled)
	before := time.Now()
	code, _, stderr := tether(t, nil, "identity", "rotate", "--socket", f.Socket)
	require.Equal(t, 0, code, stderr)
	if point == "" {
		return before
	}
	select {
	case <-exited:
	case <-time.After(60 * time.Second):
		t.Fatalf("the agent did not reach %s", point)
	}
	startAgentEnv(t, f)
	_, err := agent.FetchCredentials(context.Background(), f.Socket, "")
	require.NoError(t, err, "credentials are served right after the restart")
	return before
}

func status(t *testing.T, socket string) *agent.Status {
	t.Helper()
	st, err := agent.FetchStatus(context.Background(), socket)
	require.NoError(t, err)
	return st
}

// rotated waits until a rotation committed after since and finished its
// fallback (retired the previous certificate, removed its key).
func rotated(t *testing.T, socket string, since time.Time) *agent.Status {
	t.Helper()
	var last *agent.Status
	waitStatus(t, socket, func(st *agent.Status) bool {
		last = st
		r := st.Rotation
		return r != nil && r.LastRotation.After(since) && r.Phase == "" && st.MQTT != nil && st.MQTT.State == "connected"
	})
	return last
}

func activeCount(f *fleet) int {
	n := 0
	for _, c := range f.prov.Certificates() {
		if c.Status == fleetprovtest.Active {
			n++
		}
	}
	return n
}

// TestRotationCommits ensures that `tether identity rotate` gives the
// running agent a new certificate for a new key without a moment in which
// credentials are not served: the new identity connects and fetches before
// it is committed, the MQTT session comes back with it, and afterwards the
// previous certificate is announced as retired (the rule deactivates it)
// and its key removed.
func TestRotationCommits(t *testing.T) {
	f := provisioned(t)
	oldCert, err := os.ReadFile(f.cert)
	require.NoError(t, err)
	startAgentEnv(t, f)
	waitStatus(t, f.Socket, func(st *agent.Status) bool { return st.MQTT != nil && st.MQTT.State == "connected" })
	st := status(t, f.Socket)
	require.NotNil(t, st.Rotation)
	assert.True(t, st.Rotation.Enabled, st.Rotation.Disabled)
	assert.Greater(t, st.Rotation.DaysLeft, 300.0)

	// Poll the credentials all through the rotation.
	var served, failed atomic.Int64
	stop := make(chan struct{})
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := agent.FetchCredentials(context.Background(), f.Socket, ""); err != nil {
				failed.Add(1)
				t.Logf("credentials not served: %v", err)
			} else {
				served.Add(1)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()

	before := time.Now()
	code, out, stderr := tether(t, nil, "identity", "rotate", "--socket", f.Socket)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, out, "rotation requested")
	after := rotated(t, f.Socket, before)
	close(stop)
	<-polled
	assert.Zero(t, failed.Load(), "credentials were not served during the rotation")
	assert.Positive(t, served.Load())

	newCert, err := os.ReadFile(f.cert)
	require.NoError(t, err)
	assert.NotEqual(t, oldCert, newCert)
	assert.Empty(t, after.Rotation.LastError)
	old := fleetprovtest.CertificateID(mustParseCert(t, oldCert))
	require.Eventually(t, func() bool { return f.prov.Status(old) == fleetprovtest.Inactive }, 20*time.Second, 20*time.Millisecond,
		"the retirement notice reaches the rule")
	assert.Equal(t, 1, activeCount(f))
	assert.Len(t, f.prov.Things(provisionedThing), 2)
	keys, err := os.ReadFile(f.key)
	require.NoError(t, err)
	assert.Equal(t, 1, strings.Count(string(keys), "BEGIN PRIVATE KEY"), "the previous key is removed")
	for _, leftover := range []string{f.cert + ".prev", f.cert + ".next", f.key + ".next"} {
		_, err := os.Stat(leftover)
		assert.ErrorIs(t, err, os.ErrNotExist, leftover)
	}
	// The old certificate is refused everywhere now, so what still works
	// works with the new one.
	_, err = agent.FetchCredentials(context.Background(), f.Socket, "")
	require.NoError(t, err)
	f.directFetch(t)

	code, text, _ := tether(t, nil, "status", "--socket", f.Socket)
	require.Equal(t, 0, code)
	assert.Contains(t, text, "rotation")
	assert.Contains(t, text, "days left")
}

// TestRotationRefusedRollsBack ensures that a new certificate the broker
// will not trust is never committed: the agent keeps its identity and keeps
// serving, status names the failure, the refused certificate is announced
// for deactivation, and nothing of the attempt is left on disk.
func TestRotationRefusedRollsBack(t *testing.T) {
	f := provisioned(t)
	oldCert, err := os.ReadFile(f.cert)
	require.NoError(t, err)
	oldKey, err := os.ReadFile(f.key)
	require.NoError(t, err)
	startAgentEnv(t, f)
	waitStatus(t, f.Socket, func(st *agent.Status) bool { return st.MQTT != nil && st.MQTT.State == "connected" })

	f.prov.Fail(fleetprovtest.CreateFromCSR, 1, fleetprovtest.FaultUntrusted)
	code, _, stderr := tether(t, nil, "identity", "rotate", "--socket", f.Socket)
	require.Equal(t, 0, code, stderr)
	var st *agent.Status
	waitStatus(t, f.Socket, func(s *agent.Status) bool {
		st = s
		return s.Rotation != nil && s.Rotation.LastError != "" && s.Rotation.Phase == ""
	})
	assert.Contains(t, st.Rotation.LastError, "broker refuses the new certificate")
	assert.Equal(t, 1, st.Rotation.Attempts)
	assert.True(t, st.Rotation.NextAttempt.After(time.Now()), "the next attempt is backed off")
	assert.True(t, st.Rotation.LastRotation.IsZero())

	cert, _ := os.ReadFile(f.cert)
	key, _ := os.ReadFile(f.key)
	assert.Equal(t, oldCert, cert)
	assert.Equal(t, oldKey, key)
	for _, leftover := range []string{f.cert + ".next", f.key + ".next", f.cert + ".prev"} {
		_, err := os.Stat(leftover)
		assert.ErrorIs(t, err, os.ErrNotExist, leftover)
	}
	_, err = agent.FetchCredentials(context.Background(), f.Socket, "")
	require.NoError(t, err)
	require.Eventually(t, func() bool { return activeCount(f) == 1 }, 20*time.Second, 20*time.Millisecond,
		"the refused certificate is deactivated by the retirement rule")

	code, text, _ := tether(t, nil, "status", "--socket", f.Socket)
	require.Equal(t, 0, code)
	assert.Contains(t, text, "rotation error")

	t.Run("the next attempt commits", func(t *testing.T) {
		before := time.Now()
		code, _, stderr := tether(t, nil, "identity", "rotate", "--socket", f.Socket)
		require.Equal(t, 0, code, stderr)
		rotated(t, f.Socket, before)
		f.directFetch(t)
	})
}

// TestRotationCrashAtEveryStep ensures that a kill -9 of the agent at every
// step boundary of a rotation is followed, after a restart, by a finished
// rotation and a working identity, and that credentials are served right
// after each restart.
func TestRotationCrashAtEveryStep(t *testing.T) {
	points := []string{"rotation:certificate", "rotation:register", "rotation:prove", "rotation:commit",
		"rotation:commit-key", "rotation:commit-cert", "rotation:fallback", "rotation:previous-removed"}
	for _, point := range points {
		t.Run(point, func(t *testing.T) {
			f := provisioned(t)
			before := rotateThrough(t, f, point)
			rotated(t, f.Socket, before)
			f.directFetch(t)
			require.Eventually(t, func() bool { return activeCount(f) == 1 }, 20*time.Second, 20*time.Millisecond)
		})
	}
}

func mustParseCert(t *testing.T, pemBytes []byte) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(pemBytes)
	require.NotNil(t, b)
	c, err := x509.ParseCertificate(b.Bytes)
	require.NoError(t, err)
	return c
}

// TestRotationWhenDue ensures that the agent rotates on its own once the
// certificate has passed rotate_at of its lifetime, and that the new
// certificate is not due again.
func TestRotationWhenDue(t *testing.T) {
	var skew atomic.Int64
	skew.Store(int64(-300 * 24 * time.Hour))
	f := newFleet(t, "", func(o *fleetprovtest.Options) {
		o.Now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	})
	f.writeConfigWith(rotationSettings, "")
	code, _, stderr := tether(t, nil, "provision", "-c", f.Config)
	require.Equal(t, 0, code, stderr)
	skew.Store(0)
	before := time.Now()
	startAgentEnv(t, f)
	st := rotated(t, f.Socket, before)
	assert.Greater(t, st.Rotation.DaysLeft, 300.0, "the new certificate")
	assert.True(t, st.Rotation.Due.After(time.Now().Add(200*24*time.Hour)), "and it is not due again: %s", st.Rotation.Due)
	f.directFetch(t)
}

// inFallback provisions f with a one-hour fallback period, starts its agent
// and rotates, returning once the new identity runs and the previous one is
// kept (phase fallback): the previous certificate and its id.
func inFallback(t *testing.T, f *fleet) ([]byte, string) {
	t.Helper()
	f.writeConfigWith(strings.Replace(rotationSettings, `fallback          = "0s"`, `fallback = "1h"`, 1), "")
	code, _, stderr := tether(t, nil, "provision", "-c", f.Config)
	require.Equal(t, 0, code, stderr)
	oldCert, _ := os.ReadFile(f.cert)
	oldID := fleetprovtest.CertificateID(mustParseCert(t, oldCert))
	startAgentEnv(t, f)
	waitStatus(t, f.Socket, func(st *agent.Status) bool { return st.MQTT != nil && st.MQTT.State == "connected" })
	code, _, stderr = tether(t, nil, "identity", "rotate", "--socket", f.Socket)
	require.Equal(t, 0, code, stderr)
	waitStatus(t, f.Socket, func(s *agent.Status) bool {
		return s.Rotation != nil && s.Rotation.Phase == "fallback" && s.Identity.CertificateID != oldID
	})
	return oldCert, oldID
}

// TestRotationKeepsFallback ensures that during the fallback period the
// previous identity stays complete (its certificate in certificate.prev,
// its key in the key file, its certificate ACTIVE in the cloud), while the
// agent already runs the new one.
func TestRotationKeepsFallback(t *testing.T) {
	f := newFleet(t, "")
	oldCert, _ := inFallback(t, f)
	var st *agent.Status
	waitStatus(t, f.Socket, func(s *agent.Status) bool {
		st = s
		return s.MQTT != nil && s.MQTT.State == "connected"
	})
	assert.WithinDuration(t, time.Now().Add(time.Hour), st.Rotation.FallbackUntil, 5*time.Minute)
	prev, err := os.ReadFile(f.cert + ".prev")
	require.NoError(t, err)
	assert.Equal(t, oldCert, prev)
	keys, _ := os.ReadFile(f.key)
	assert.Equal(t, 2, strings.Count(string(keys), "BEGIN PRIVATE KEY"))
	assert.Equal(t, fleetprovtest.Active, f.prov.Status(fleetprovtest.CertificateID(mustParseCert(t, oldCert))))
	assert.Equal(t, 2, activeCount(f))
	code, text, _ := tether(t, nil, "status", "--socket", f.Socket)
	require.Equal(t, 0, code)
	assert.Contains(t, text, "previous identity kept until")
}

// TestRotationFallsBack ensures that when the credentials provider refuses
// the new certificate after the switch (here: the cloud deactivated it), the
// agent goes back to the previous identity it kept, and serves credentials
// with it again.
func TestRotationFallsBack(t *testing.T) {
	f := newFleetLifetime(t, "", time.Minute)
	oldCert, oldID := inFallback(t, f)
	newID := status(t, f.Socket).Identity.CertificateID
	require.NoError(t, f.prov.SetStatus(newID, fleetprovtest.Inactive))
	// The credentials of the new identity run out and cannot be renewed;
	// the rotator notices on its next look (each minute), or at once when
	// asked.
	waitStatusFor(t, f.Socket, 2*time.Minute, func(s *agent.Status) bool {
		return s.Identity.CertificateID == oldID || (len(s.Roles) > 0 && !s.Roles[0].Valid && strings.Contains(s.Roles[0].LastError, "403"))
	})
	if status(t, f.Socket).Identity.CertificateID != oldID {
		code, _, stderr := tether(t, nil, "identity", "rotate", "--socket", f.Socket)
		require.Equal(t, 0, code, stderr)
	}
	var st *agent.Status
	waitStatusFor(t, f.Socket, time.Minute, func(s *agent.Status) bool {
		st = s
		return s.Identity.CertificateID == oldID && len(s.Roles) > 0 && s.Roles[0].Valid
	})
	assert.Contains(t, st.Rotation.LastError, "rolled back")
	cert, _ := os.ReadFile(f.cert)
	assert.Equal(t, oldCert, cert)
	_, err := agent.FetchCredentials(context.Background(), f.Socket, "")
	require.NoError(t, err)
}

// TestRotationFallsBackOnBrokerRefusal ensures that when only the broker
// refuses the new certificate after the switch (here: its CRL revokes it
// and it restarts, so the session must connect again) while the credentials
// provider still takes it and the previous certificate still connects, the
// agent goes back to the previous identity, whose MQTT session connects and
// whose credentials it serves.
func TestRotationFallsBackOnBrokerRefusal(t *testing.T) {
	f := newFleetLifetime(t, "", time.Hour)
	oldCert, oldID := inFallback(t, f)
	waitStatus(t, f.Socket, func(s *agent.Status) bool { return s.MQTT != nil && s.MQTT.State == "connected" })
	newCert, err := os.ReadFile(f.cert)
	require.NoError(t, err)
	require.NoError(t, f.broker.RefuseCertificates([]*big.Int{mustParseCert(t, newCert).SerialNumber}))
	require.NoError(t, f.broker.Stop())
	require.NoError(t, f.broker.Start())
	waitStatus(t, f.Socket, func(s *agent.Status) bool { return s.MQTT != nil && s.MQTT.IdentityRefused >= 2 })
	// The credentials provider still serves the new certificate: only the
	// broker's refusal can send the agent back.
	assert.True(t, status(t, f.Socket).Roles[0].Valid)
	// The rotator looks each minute during the fallback, or at once when asked.
	code, _, stderr := tether(t, nil, "identity", "rotate", "--socket", f.Socket)
	require.Equal(t, 0, code, stderr)
	var st *agent.Status
	waitStatusFor(t, f.Socket, time.Minute, func(s *agent.Status) bool {
		st = s
		return s.Identity.CertificateID == oldID && s.MQTT != nil && s.MQTT.State == "connected" && len(s.Roles) > 0 && s.Roles[0].Valid
	})
	assert.Contains(t, st.Rotation.LastError, "the broker refused the new certificate after the switch; rolled back")
	cert, _ := os.ReadFile(f.cert)
	assert.Equal(t, oldCert, cert)
	_, err = agent.FetchCredentials(context.Background(), f.Socket, "")
	require.NoError(t, err)
}
