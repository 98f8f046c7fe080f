package packaging

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/credprovider/iotcredtest"
	"github.com/tetherd/tether/hsm/tpm/tpmtest"
	"github.com/tetherd/tether/packaging/nspawntest"
)

// TestLiveSystemdTPM ensures that the .deb's agent, booted under systemd as
// PID 1 with the shipped tpm2.conf drop-in and its hardening, holds its key
// in a TPM: tether hsm keygen and csr make the key and request as an
// operator would, the service starts with the drop-in (group tss from
// tpm-udev, the one TPM device allowed), reads the key's PIN through
// LoadCredential=, fetches and serves credentials, and the PIN is in no log.
// The TPM is swtpm on the host; its socket lives inside the root (the
// test's stand-in for /dev/tpmrm0, which this machine does not have).
func TestLiveSystemdTPM(t *testing.T) {
	current, _ := liveDebs(t)
	r := nspawntest.Boot(t, nspawntest.Options{Packages: []string{"tpm-udev"}})
	r.LogJournalOnFailure(t, "tether.service")
	iot, err := iotcredtest.NewServer(iotcredtest.WithRoleAlias("gateway-role", time.Hour))
	require.NoError(t, err)
	defer iot.Close()
	require.NoError(t, os.MkdirAll(r.Path("/var/lib/swtpm"), 0o755))
	tpmtest.StartIn(t, r.Path("/var/lib/swtpm"))
	const socket = "/var/lib/swtpm/tpm.sock"

	r.CopyIn(t, current, "/root/current.deb")
	r.Run(t, "dpkg", "-i", "/root/current.deb")
	pin := "7351" + strconv.FormatInt(time.Now().UnixNano()%1e8, 10)
	r.WriteFile(t, "/etc/tether/tpm-pin", []byte(pin), 0o600)
	key := fmt.Sprintf("tpm:file=/etc/tether/device.tss2?device=%s&pin-source=", socket)
	r.Run(t, "tether", "hsm", "keygen", "--key", key+"file:/etc/tether/tpm-pin", "--type", "ec-p256")
	r.Run(t, "chown", "tether:tether", "/etc/tether/device.tss2")
	csr := r.Run(t, "tether", "hsm", "csr", "--key", key+"file:/etc/tether/tpm-pin", "--subject", "CN=gw-0001")
	r.WriteFile(t, "/etc/tether/device.crt", signCSR(t, iot, csr), 0o644)
	r.WriteFile(t, "/etc/tether/ca.crt", iot.PKI.CAPEM, 0o644)
	r.WriteFile(t, "/etc/tether/tether.toml", []byte(strings.Replace(liveConfig(iot.Endpoint, ""), keyURI, key+"credential:tpm-pin", 1)), 0o644)
	r.Run(t, "mkdir", "-p", "/etc/systemd/system/tether.service.d")
	r.Run(t, "cp", "/usr/share/doc/tether/examples/tpm2.conf", "/etc/systemd/system/tether.service.d/")
	r.WriteFile(t, "/etc/systemd/system/tether.service.d/tpm-pin.conf",
		[]byte("[Service]\nLoadCredential=tpm-pin:/etc/tether/tpm-pin\n"), 0o644)
	r.Run(t, "useradd", "-G", "tether", "alice")

	r.Systemctl(t, "daemon-reload")
	r.Systemctl(t, "enable", "--now", "tether.socket", "tether.service")
	require.Equal(t, "active", r.Show(t, "tether.service", "ActiveState"))
	assert.NotEmpty(t, credentialsAs(t, r, "alice", ""))

	assert.Contains(t, r.Show(t, "tether.service", "DeviceAllow"), "/dev/tpmrm0 rw")
	assert.Equal(t, "closed", r.Show(t, "tether.service", "DevicePolicy"))
	assert.Equal(t, "no", r.Show(t, "tether.service", "PrivateDevices"))
	tss := strings.Split(strings.TrimSpace(r.Run(t, "getent", "group", "tss")), ":")[2]
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", r.HostPID(t, r.Show(t, "tether.service", "MainPID"))))
	require.NoError(t, err)
	assert.Regexp(t, `(?m)^Groups:.*\b`+tss+`\b`, string(status), "the agent runs with group tss")
	assert.NotContains(t, r.Run(t, "journalctl", "--no-pager", "-b", "-o", "verbose"), pin)
	assert.NotContains(t, r.Run(t, "tether", "status"), pin)
}
