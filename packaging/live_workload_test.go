package packaging

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/credprovider/iotcredtest"
	"github.com/tetherd/tether/credprovider/ststest"
	"github.com/tetherd/tether/packaging/nspawntest"
)

// TestLiveWorkloads ensures that, with the .deb installed in a Debian 12
// root booted with systemd and the shipped workloads.conf drop-in, programs
// that systemd itself starts as transient units (systemd-run --unit --uid)
// get the session of their [[workload]]: by unit, whatever their user, and
// by uid for the others; that the STS calls carry tags and a source identity
// naming the unit and the thing; and that a workload is refused another role
// while programs no workload picks get the device role as before.
func TestLiveWorkloads(t *testing.T) {
	current, _ := liveDebs(t)
	// The same package set as TestLiveSystemd, so both use one cached root.
	r := nspawntest.Boot(t, nspawntest.Options{Packages: []string{"softhsm2"}})
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := r.Exec(context.Background(), "journalctl", "--no-pager", "-n", "60", "-u", "tether.service")
			t.Logf("the agent's journal:\n%s", out)
		}
	})

	iot, err := iotcredtest.NewServer(iotcredtest.WithRoleAlias("gateway-role", time.Hour))
	require.NoError(t, err)
	defer iot.Close()
	// The simulator keeps no secrets: STS asks the agent (as root, whom no
	// workload picks) for the device role's credentials it must have signed
	// with.
	const roleARN = "arn:aws:iam::123456789012:role/telemetry"
	sts := ststest.NewServer(ststest.WithRegion("eu-west-1"), ststest.WithLookup(func(akid string) (aws.Credentials, string, bool) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		out, err := r.Exec(ctx, "tether", "credential-process")
		var c struct{ AccessKeyId, SecretAccessKey, SessionToken string }
		if err != nil || json.Unmarshal(out, &c) != nil || c.AccessKeyId != akid {
			return aws.Credentials{}, "", false
		}
		return aws.Credentials{AccessKeyID: c.AccessKeyId, SecretAccessKey: c.SecretAccessKey, SessionToken: c.SessionToken},
			"arn:aws:sts::123456789012:assumed-role/gateway/gw-0001", true
	}))
	defer sts.Close()
	sts.AddRole(ststest.Role{ARN: roleARN})

	r.CopyIn(t, current, "/root/current.deb")
	r.Run(t, "dpkg", "-i", "/root/current.deb")
	dev, err := iot.PKI.NewDevice("gw-0001", iotcredtest.ECDSAP256)
	require.NoError(t, err)
	r.WriteFile(t, "/etc/tether/device.crt", dev.CertPEM, 0o644)
	r.WriteFile(t, "/etc/tether/device.key", dev.KeyPEM, 0o600)
	r.Run(t, "chown", "tether:tether", "/etc/tether/device.key")
	r.WriteFile(t, "/etc/tether/ca.crt", iot.PKI.CAPEM, 0o644)
	r.Run(t, "useradd", "-G", "tether", "alice")
	r.Run(t, "useradd", "-G", "tether", "batch")
	batchUID := strings.TrimSpace(r.Run(t, "id", "-u", "batch"))
	config := strings.Replace(liveConfig(iot.Endpoint, fmt.Sprintf(`
[[role]]
name         = "telemetry"
role_arn     = %q
sts_endpoint = %q

[[workload]]
name   = "uploader"
unit   = "uploader.service"
role   = "telemetry"
policy = '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:PutObject","Resource":"*"}]}'

[[workload]]
name = "batch"
uid  = %s
role = "telemetry"
`, roleARN, sts.URL, batchUID)), keyURI, "/etc/tether/device.key", 1)
	r.WriteFile(t, "/etc/tether/tether.toml", []byte(config), 0o640)
	r.Run(t, "chgrp", "tether", "/etc/tether/tether.toml")
	// The hardened unit alone hides other programs from the agent: it says so.
	r.Systemctl(t, "enable", "--now", "tether.socket", "tether.service")
	r.WaitFor(t, 30*time.Second, "the agent to warn that it cannot tell programs apart", func() bool {
		return strings.Contains(r.Journal(t, "tether.service"), "cannot tell local programs apart; under systemd install the workloads.conf drop-in")
	})
	r.WaitFor(t, 60*time.Second, "every session to be assumed", func() bool { return len(sts.CallsFor(roleARN)) >= 3 })
	r.Systemctl(t, "stop", "tether.service")
	r.Run(t, "mkdir", "-p", "/etc/systemd/system/tether.service.d")
	r.Run(t, "cp", "/usr/share/doc/tether/examples/workloads.conf", "/etc/systemd/system/tether.service.d/")
	r.Systemctl(t, "daemon-reload")
	r.Systemctl(t, "start", "tether.service")
	r.WaitFor(t, 30*time.Second, "the agent to run", func() bool { return r.Show(t, "tether.service", "ActiveState") == "active" })
	assert.Equal(t, 1, strings.Count(r.Journal(t, "tether.service"), "cannot tell local programs apart"), "with the drop-in it sees them")
	// The restart serves the sessions it cached, or assumes them again:
	// the last of each is served.
	issued := map[string]ststest.Call{}
	for _, c := range sts.CallsFor(roleARN) {
		issued[c.Tags["tether:workload"]] = c
	}
	up, batch := issued["uploader"], issued["batch"]
	assert.Equal(t, "uploader.service@gw-0001", up.SourceIdentity)
	assert.Equal(t, map[string]string{"tether:thing": "gw-0001", "tether:workload": "uploader", "tether:unit": "uploader.service"}, up.Tags)
	assert.Equal(t, batchUID, batch.Tags["tether:uid"])

	// run starts tether credential-process as a transient unit of systemd's
	// and returns the access key it printed, or its error output.
	run := func(unit, user string, args ...string) (string, error) {
		argv := append([]string{"systemd-run", "--quiet", "--pipe", "--wait", "--collect", "--unit=" + unit, "--uid=" + user,
			"-p", "SupplementaryGroups=tether", "tether", "credential-process"}, args...)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		out, err := r.Exec(ctx, argv...)
		var c struct{ AccessKeyId string }
		if err != nil || json.Unmarshal(out, &c) != nil {
			return "", fmt.Errorf("%v: %s", err, out)
		}
		return c.AccessKeyId, nil
	}
	device := credentialsAs(t, r, "root", "")
	for _, tc := range []struct {
		name, unit, user string
		args             []string
		want             string
	}{
		{"the unit gets its session", "uploader", "alice", nil, up.Issued},
		{"whatever its user", "uploader", "batch", nil, up.Issued},
		{"by its role's name too", "uploader", "alice", []string{"--role", "telemetry"}, up.Issued},
		{"the uid in another unit", "nightly", "batch", nil, batch.Issued},
		{"others: the device role", "report", "alice", nil, device},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := run(tc.unit, tc.user, tc.args...)
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
	t.Run("a workload is refused another role", func(t *testing.T) {
		_, err := run("uploader", "alice", "--role", "device")
		require.Error(t, err)
		assert.Contains(t, err.Error(), "workload uploader (unit uploader.service), which gets role telemetry only")
	})
	assert.Contains(t, r.Journal(t, "tether.service"), "refused a workload a role it is not mapped to")
}
