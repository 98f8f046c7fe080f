package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/agent/agenttest"
	"github.com/tetherd/tether/mqtt/fleetprov/fleetprovtest"
	"github.com/tetherd/tether/mqtt/mqtttest"
)

// fleet is a device about to be provisioned: mosquitto (mTLS, MQTT v5,
// CRL), the provisioning simulator, the credentials-provider simulator, a
// claim certificate, and a configuration whose [identity] does not exist
// yet.
type fleet struct {
	*agenttest.Env
	broker         *mqtttest.Broker
	prov           *fleetprovtest.Server
	cert, key      string
	claim, claimKy string
}

const provisionedThing = "gw-SN1234"

func newFleet(t *testing.T, key string, opts ...func(*fleetprovtest.Options)) *fleet {
	t.Helper()
	return newFleetLifetime(t, key, time.Hour, opts...)
}

// newFleetLifetime is newFleet with credentials that live for lifetime.
func newFleetLifetime(t *testing.T, key string, lifetime time.Duration, opts ...func(*fleetprovtest.Options)) *fleet {
	t.Helper()
	broker := mqtttest.NewBroker(t, mqtttest.Options{CRL: true})
	e := agenttest.New(t, lifetime, "")
	e.Sim.TrustCA(broker.PKI.CA)
	po := fleetprovtest.Options{
		Templates: map[string]fleetprovtest.Template{
			"gateway-fleet": {Parameters: []string{"SerialNumber"}, ThingName: func(p map[string]string) (string, error) {
				return "gw-" + p["SerialNumber"], nil
			}},
			"gateway-rotate": {Parameters: []string{"ThingName"}, Existing: true},
		},
		RetiredTopic: "tether/retired",
	}
	for _, o := range opts {
		o(&po)
	}
	prov := fleetprovtest.NewWithBroker(t, broker, po, e.Sim)
	f := &fleet{Env: e, broker: broker, prov: prov}
	f.claim, f.claimKy = mqtttest.DeviceFiles(t, broker.PKI, "claim")
	f.cert = filepath.Join(e.Dir, "device.crt")
	f.key = key
	if f.key == "" {
		f.key = filepath.Join(e.Dir, "device.key")
	}
	serial := filepath.Join(e.Dir, "serial")
	require.NoError(t, os.WriteFile(serial, []byte("SN1234\n"), 0o644))
	f.writeConfig("")
	return f
}

func (f *fleet) writeConfig(extra string) { f.writeConfigWith("", extra) }

// writeConfigWith also adds identity lines to [identity].
func (f *fleet) writeConfigWith(identity, extra string) {
	f.WriteConfig(fmt.Sprintf(`
[mqtt]
endpoint = %q
ca_file  = %q

[provision]
claim_certificate = %q
claim_private_key = %q
template          = "gateway-fleet"
parameters        = { SerialNumber = "file:%s" }
%s`, f.broker.Addr, f.broker.CAFile, f.claim, f.claimKy, filepath.Join(f.Dir, "serial"), extra),
		`thing_name  = "gw-0001"`, "# thing_name comes from provisioning\n"+identity,
		f.CertFile, f.cert, f.KeyFile, f.key)
}

// directFetch proves an identity works: credential-process --direct
// fetches with it from the credentials-provider simulator.
func (f *fleet) directFetch(t *testing.T) {
	t.Helper()
	code, out, stderr := tether(t, nil, "credential-process", "--direct", "-c", f.Config)
	require.Equal(t, 0, code, stderr)
	var pc processCredentials
	require.NoError(t, json.Unmarshal([]byte(out), &pc))
	grants := f.Sim.Grants()
	require.NotEmpty(t, grants)
	assert.Equal(t, provisionedThing, grants[len(grants)-1].ThingName)
}

// TestProvisionByClaim ensures that tether provision turns a claim into a
// device identity that `tether run` serves credentials with: the key is
// generated on the device, the certificate activated by RegisterThing, the
// thing name written into tether.toml; a second run has nothing to do.
func TestProvisionByClaim(t *testing.T) {
	f := newFleet(t, "")
	code, out, stderr := tether(t, nil, "provision", "-c", f.Config)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, out, "provisioned thing "+provisionedThing)
	cfgText, err := os.ReadFile(f.Config)
	require.NoError(t, err)
	assert.Contains(t, string(cfgText), `thing_name = "`+provisionedThing+`"`)
	assert.Contains(t, string(cfgText), "# thing_name comes from provisioning", "the rest of the file is kept")
	st, err := os.Stat(f.key)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	_, err = os.Stat(f.key + ".new")
	assert.ErrorIs(t, err, os.ErrNotExist, "the staged key is gone")
	certs := f.prov.Certificates()
	require.Len(t, certs, 1)
	assert.Equal(t, fleetprovtest.Active, certs[0].Status)
	assert.Equal(t, provisionedThing, certs[0].Thing)

	code, out, stderr = tether(t, nil, "provision", "-c", f.Config)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, out, "nothing to do")
	assert.Len(t, f.prov.Certificates(), 1, "a second run asks for nothing")

	code, _, stderr = tether(t, nil, "config", "check", "-c", f.Config)
	require.Equal(t, 0, code, stderr)
	startAgent(t, f.Env)
	c := served(t, f.Socket, "")
	assert.NotEmpty(t, c.AccessKeyID)
	grants := f.Sim.Grants()
	assert.Equal(t, provisionedThing, grants[len(grants)-1].ThingName)
}

// TestProvisionRefusals ensures that each refusal is one line naming the
// reason, with the exit status of its kind, and that the next run, once the
// cause is gone, finishes the job with the same key.
func TestProvisionRefusals(t *testing.T) {
	f := newFleet(t, "")
	cases := []struct {
		name  string
		api   fleetprovtest.API
		fault fleetprovtest.Fault
		code  int
		want  string
	}{
		{"throttled", fleetprovtest.CreateFromCSR, fleetprovtest.FaultThrottled, 1, "ThrottlingException"},
		{"rejected", fleetprovtest.RegisterThing, fleetprovtest.FaultRejected, 2, "RegisterThing rejected: 400 InvalidRequest"},
		{"no reply", fleetprovtest.RegisterThing, fleetprovtest.FaultNoReply, 1, "no reply"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f.prov.Fail(tc.api, 1, tc.fault)
			code, out, stderr := tether(t, nil, "provision", "-c", f.Config, "--timeout", "1s")
			assert.Equal(t, tc.code, code, stderr)
			assert.Empty(t, out)
			assert.Equal(t, 1, strings.Count(stderr, "\n"), stderr)
			assert.Contains(t, stderr, tc.want)
			_, err := os.Stat(f.cert)
			assert.ErrorIs(t, err, os.ErrNotExist, "no certificate before it is active")
		})
	}
	t.Run("refused template", func(t *testing.T) {
		f.writeConfig("")
		b, _ := os.ReadFile(f.Config)
		require.NoError(t, os.WriteFile(f.Config, []byte(strings.Replace(string(b), `"gateway-fleet"`, `"no-such-template"`, 1)), 0o600))
		code, _, stderr := tether(t, nil, "provision", "-c", f.Config)
		assert.Equal(t, 2, code)
		assert.Contains(t, stderr, "Template no-such-template not found")
		assert.Equal(t, 1, strings.Count(stderr, "\n"), stderr)
	})
	t.Run("the next run finishes", func(t *testing.T) {
		f.writeConfig("")
		code, _, stderr := tether(t, nil, "provision", "-c", f.Config)
		require.Equal(t, 0, code, stderr)
		f.directFetch(t)
		active := 0
		for _, c := range f.prov.Certificates() {
			if c.Status == fleetprovtest.Active {
				active++
			}
		}
		assert.Equal(t, 1, active)
	})
}

// TestProvisionCrashAtEveryStep ensures that a kill -9 at every step
// boundary of provisioning is followed by a run that ends in a working
// identity, with the claim untouched and no key left without a certificate.
func TestProvisionCrashAtEveryStep(t *testing.T) {
	for _, point := range []string{"provision:certificate", "provision:register", "provision:commit", "provision:commit-key", "provision:done"} {
		t.Run(point, func(t *testing.T) {
			f := newFleet(t, "")
			code, _, stderr := tether(t, []string{"TETHER_FAILPOINT=" + point}, "provision", "-c", f.Config)
			require.Equal(t, -1, code, "killed at %s: %s", point, stderr)
			if point != "provision:commit-key" && point != "provision:done" {
				_, err := os.Stat(f.key)
				assert.ErrorIs(t, err, os.ErrNotExist, "no key at the final path before its certificate is active")
			}
			code, _, stderr = tether(t, nil, "provision", "-c", f.Config)
			require.Equal(t, 0, code, stderr)
			f.directFetch(t)
			var attached int
			for _, c := range f.prov.Certificates() {
				if c.Status == fleetprovtest.Active {
					attached++
				}
			}
			assert.Equal(t, 1, attached, "one active certificate")
		})
	}
}
