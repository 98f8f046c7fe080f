package packaging

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/credprovider/iotcredtest"
	"github.com/tetherd/tether/packaging/nspawntest"
)

// The live systemd test runs with `make test-systemd`, which builds the
// .deb twice (the current tree and a lower "previous" version) and sets:
//
//	TETHER_LIVE_DEB           the package under test
//	TETHER_LIVE_PREVIOUS_DEB  the package it upgrades from
//
// Without them, or without root/nspawn/debootstrap, it skips and says why.
func liveDebs(t *testing.T) (current, previous string) {
	current, previous = os.Getenv("TETHER_LIVE_DEB"), os.Getenv("TETHER_LIVE_PREVIOUS_DEB")
	if current == "" || previous == "" {
		t.Skip("the live systemd test runs with `make test-systemd` (it builds the .deb packages it installs)")
	}
	if err := nspawntest.Available(); err != nil {
		t.Skipf("cannot boot a root with systemd-nspawn: %v", err)
	}
	return current, previous
}

const (
	tokenDir = "/var/lib/tether/softhsm"
	keyURI   = "pkcs11:token=tether;object=device?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=credential:pin"
)

// TestLiveSystemd ensures that the .deb, installed with dpkg into a Debian 12
// root booted with systemd as PID 1, behaves as docs/systemd.md and
// docs/packaging.md promise: install enables nothing; socket and service
// start; group tether members get credentials and others are refused; every
// hardening directive holds while the agent works; the PIN arrives through
// LoadCredential= and never reaches the journal; reload keeps serving;
// upgrade restarts the agent and keeps state and a changed configuration;
// kill -9 is restarted and serves cached credentials with the simulator
// down; a frozen agent is restarted by the watchdog; a configuration error
// exits 2 without a restart loop; remove stops it and purge removes state.
// The steps share one booted root and run in order.
func TestLiveSystemd(t *testing.T) {
	current, previous := liveDebs(t)
	r := nspawntest.Boot(t, nspawntest.Options{Packages: []string{"softhsm2"}})
	r.LogJournalOnFailure(t, "tether.service", "tether.socket")

	iot, err := iotcredtest.NewServer(iotcredtest.WithRoleAlias("gateway-role", time.Hour))
	require.NoError(t, err)
	defer iot.Close()

	r.CopyIn(t, previous, "/root/previous.deb")
	r.CopyIn(t, current, "/root/current.deb")

	// The PIN is a value this test can search every log for.
	pin := "8613" + strconv.FormatInt(time.Now().UnixNano()%1e8, 10)
	tokenOnHost := makeToken(t, pin)

	t.Run("install enables nothing and says what to do next", func(t *testing.T) {
		out := r.Run(t, "dpkg", "-i", "/root/previous.deb")
		assert.Contains(t, out, "not enabled")
		assert.Contains(t, out, "systemctl enable --now tether.socket tether.service")
		for _, unit := range []string{"tether.service", "tether.socket"} {
			state, _ := r.Exec(context.Background(), "systemctl", "is-enabled", unit)
			assert.Equal(t, "disabled", strings.TrimSpace(string(state)), unit)
			active, _ := r.Exec(context.Background(), "systemctl", "is-active", unit)
			assert.Equal(t, "inactive", strings.TrimSpace(string(active)), unit)
		}
		assert.Contains(t, r.Run(t, "getent", "passwd", "tether"), "/var/lib/tether:/usr/sbin/nologin")
		assert.Equal(t, "750 root:tether", strings.TrimSpace(r.Run(t, "stat", "-c", "%a %U:%G", "/etc/tether")))
		assert.Equal(t, "700 tether:tether", strings.TrimSpace(r.Run(t, "stat", "-c", "%a %U:%G", "/var/lib/tether")))
	})
	if t.Failed() {
		t.FailNow()
	}

	// The identity: a SoftHSM token in the state directory, its PIN in a
	// root-only file handed over by the shipped LoadCredential= drop-in.
	r.CopyIn(t, tokenOnHost, tokenDir)
	r.Run(t, "chown", "-R", "tether:tether", tokenDir)
	r.WriteFile(t, "/etc/tether/softhsm2.conf", []byte("directories.tokendir = "+tokenDir+"\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n"), 0o644)
	r.WriteFile(t, "/etc/tether/pin", []byte(pin+"\n"), 0o600)
	csr := r.Run(t, "env", "SOFTHSM2_CONF=/etc/tether/softhsm2.conf", "tether", "hsm", "csr",
		"--key", strings.Replace(keyURI, "credential:pin", "file:/etc/tether/pin", 1), "--subject", "CN=gw-0001")
	r.WriteFile(t, "/etc/tether/device.crt", signCSR(t, iot, csr), 0o644)
	r.WriteFile(t, "/etc/tether/ca.crt", iot.PKI.CAPEM, 0o644)
	r.Run(t, "mkdir", "-p", "/etc/systemd/system/tether.service.d")
	r.Run(t, "cp", "/usr/share/doc/tether/examples/pkcs11-pin.conf", "/etc/systemd/system/tether.service.d/")
	// Test-only: where SoftHSM keeps this token, and a 10 s watchdog so the
	// freeze below is noticed in seconds instead of the shipped minute.
	r.WriteFile(t, "/etc/systemd/system/tether.service.d/test.conf",
		[]byte("[Service]\nEnvironment=SOFTHSM2_CONF=/etc/tether/softhsm2.conf\nWatchdogSec=10s\n"), 0o644)
	config := liveConfig(iot.Endpoint, "")
	r.WriteFile(t, "/etc/tether/tether.toml", []byte(config), 0o644)
	r.Run(t, "useradd", "-G", "tether", "alice")
	r.Run(t, "useradd", "bob")

	var firstKey string
	t.Run("socket and service start; group tether gets credentials, others are refused", func(t *testing.T) {
		r.Systemctl(t, "daemon-reload")
		r.Systemctl(t, "enable", "--now", "tether.socket", "tether.service")
		assert.Equal(t, "active", r.Show(t, "tether.socket", "ActiveState"))
		assert.Equal(t, "active", r.Show(t, "tether.service", "ActiveState"))
		firstKey = credentialsAs(t, r, "alice", "")
		assert.NotEmpty(t, firstKey)
		out, err := r.Exec(context.Background(), "runuser", "-u", "bob", "--", "tether", "credential-process")
		assert.Error(t, err, "a user outside group tether got: %s", out)
		assert.NotContains(t, string(out), "SecretAccessKey")
		assert.Contains(t, strings.ToLower(string(out)), "permission denied")
	})
	if t.Failed() {
		t.FailNow()
	}

	t.Run("every hardening directive holds while the agent runs", func(t *testing.T) {
		checkHardening(t, r)
		probeSandbox(t, r)
	})

	t.Run("the PIN reaches the key through LoadCredential and appears in no log", func(t *testing.T) {
		assert.Contains(t, r.Show(t, "tether.service", "DropInPaths"), "/etc/systemd/system/tether.service.d/pkcs11-pin.conf")
		// The PIN file is root's alone; the agent reads systemd's copy.
		assert.Equal(t, "600 root:root", strings.TrimSpace(r.Run(t, "stat", "-c", "%a %U:%G", "/etc/tether/pin")))
		assert.Contains(t, r.Run(t, "ls", "/run/credentials/tether.service"), "pin")
		pid := r.HostPID(t, r.Show(t, "tether.service", "MainPID"))
		for _, f := range []string{"environ", "cmdline"} {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, f))
			require.NoError(t, err)
			assert.NotContains(t, string(b), pin, f)
		}
		assert.NotContains(t, r.Run(t, "journalctl", "--no-pager", "-b", "-o", "verbose"), pin)
		assert.NotContains(t, r.Run(t, "tether", "status"), pin)
	})

	t.Run("reload re-reads the configuration and never stops serving", func(t *testing.T) {
		pid := r.Show(t, "tether.service", "MainPID")
		_, err := r.Exec(context.Background(), "runuser", "-u", "alice", "--", "tether", "credential-process", "--role", "extra")
		require.Error(t, err, "role extra must not exist before the reload")

		stop := r.Path("/var/tmp/stop-requests")
		var wg sync.WaitGroup
		var loop []byte
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Requests back to back until told to stop; each failure printed.
			loop, _ = r.Exec(context.Background(), "runuser", "-u", "alice", "--", "sh", "-c",
				`n=0; while [ ! -e /var/tmp/stop-requests ]; do tether credential-process >/dev/null || echo FAILED; n=$((n+1)); done; echo requests=$n`)
		}()
		r.WriteFile(t, "/etc/tether/tether.toml", []byte(liveConfig(iot.Endpoint, extraRole)), 0o644)
		for i := 0; i < 3; i++ {
			r.Systemctl(t, "reload", "tether.service")
		}
		require.NoError(t, os.WriteFile(stop, nil, 0o644))
		wg.Wait()
		t.Logf("during three reloads: %s", strings.TrimSpace(string(loop)))
		assert.NotContains(t, string(loop), "FAILED")
		assert.Regexp(t, `requests=[1-9]`, string(loop))
		assert.Equal(t, pid, r.Show(t, "tether.service", "MainPID"), "reload must not restart the agent")
		assert.Contains(t, r.Journal(t, "tether.service"), "configuration reloaded")
		assert.Equal(t, "AKIDEXTRA", credentialsAs(t, r, "alice", "extra"))
		config = liveConfig(iot.Endpoint, extraRole)
	})

	t.Run("upgrade restarts the agent and keeps state and the changed configuration", func(t *testing.T) {
		pid := r.Show(t, "tether.service", "MainPID")
		inode := r.Run(t, "stat", "-c", "%i", "/var/lib/tether/state.db")
		out := r.Run(t, "dpkg", "-i", "/root/current.deb")
		assert.NotContains(t, out, "not enabled", "an upgrade is not a first install")
		r.WaitFor(t, 30*time.Second, "the upgraded agent to run", func() bool {
			return r.Show(t, "tether.service", "ActiveState") == "active"
		})
		assert.NotEqual(t, pid, r.Show(t, "tether.service", "MainPID"), "the running agent is restarted")
		b, err := os.ReadFile(r.Path("/etc/tether/tether.toml"))
		require.NoError(t, err)
		assert.Equal(t, config, string(b), "a changed conffile survives the upgrade")
		assert.Equal(t, inode, r.Run(t, "stat", "-c", "%i", "/var/lib/tether/state.db"), "the state file is kept")
		assert.Equal(t, firstKey, credentialsAs(t, r, "alice", ""))
		version := r.Run(t, "dpkg-query", "-W", "-f", "${Version}", "tether")
		assert.NotContains(t, version, "previous")
	})

	t.Run("kill -9: systemd restarts it and cached credentials are served with the simulator down", func(t *testing.T) {
		iot.Close()
		pid := r.Show(t, "tether.service", "MainPID")
		restarts := r.Show(t, "tether.service", "NRestarts")
		r.Systemctl(t, "kill", "--signal=KILL", "--kill-whom=main", "tether.service")
		waitRestarted(t, r, pid, 30*time.Second)
		assert.NotEqual(t, restarts, r.Show(t, "tether.service", "NRestarts"))
		assert.Equal(t, firstKey, credentialsAs(t, r, "alice", ""), "the cached credentials, at once")
	})

	t.Run("watchdog: a frozen agent is restarted after WatchdogSec", func(t *testing.T) {
		assert.Equal(t, "10s", r.Show(t, "tether.service", "WatchdogUSec"))
		pid := r.Show(t, "tether.service", "MainPID")
		r.Systemctl(t, "kill", "--signal=STOP", "--kill-whom=main", "tether.service")
		waitRestarted(t, r, pid, 90*time.Second)
		assert.Contains(t, r.Journal(t, "tether.service"), "Watchdog timeout")
		assert.Equal(t, firstKey, credentialsAs(t, r, "alice", ""))
	})

	t.Run("a configuration error exits 2 and is not restarted in a loop", func(t *testing.T) {
		r.WriteFile(t, "/etc/tether/tether.toml", []byte(config+"\n[serve]\nno_such_key = 1\n"), 0o644)
		_, err := r.Exec(context.Background(), "systemctl", "restart", "tether.service")
		assert.Error(t, err, "a start with a bad configuration fails")
		r.WaitFor(t, 30*time.Second, "the agent to fail", func() bool {
			return r.Show(t, "tether.service", "ActiveState") == "failed"
		})
		assert.Equal(t, "2", r.Show(t, "tether.service", "ExecMainStatus"))
		restarts := r.Show(t, "tether.service", "NRestarts")
		// RestartSec=5s: a restart loop would have begun within this wait.
		time.Sleep(8 * time.Second)
		assert.Equal(t, "failed", r.Show(t, "tether.service", "ActiveState"))
		assert.Equal(t, restarts, r.Show(t, "tether.service", "NRestarts"))
		assert.Contains(t, r.Journal(t, "tether.service"), "tether.toml")

		r.WriteFile(t, "/etc/tether/tether.toml", []byte(config), 0o644)
		r.Systemctl(t, "reset-failed", "tether.service")
		r.Systemctl(t, "start", "tether.service")
		assert.Equal(t, firstKey, credentialsAs(t, r, "alice", ""))
	})

	t.Run("remove stops the agent; purge removes state and configuration", func(t *testing.T) {
		r.Run(t, "dpkg", "-r", "tether")
		for _, unit := range []string{"tether.service", "tether.socket"} {
			active, _ := r.Exec(context.Background(), "systemctl", "is-active", unit)
			assert.Equal(t, "inactive", strings.TrimSpace(string(active)), unit)
		}
		assert.FileExists(t, r.Path("/var/lib/tether/state.db"), "remove keeps state")
		assert.FileExists(t, r.Path("/etc/tether/tether.toml"), "remove keeps the configuration")
		out := r.Run(t, "dpkg", "-P", "tether")
		assert.NoDirExists(t, r.Path("/var/lib/tether"))
		assert.NoFileExists(t, r.Path("/etc/tether/tether.toml"))
		// What the operator put there is an identity, not state: kept, named.
		assert.FileExists(t, r.Path("/etc/tether/device.crt"))
		assert.Contains(t, out, "kept /etc/tether")
	})
}

// extraRole is a role whose credentials come from a command, added by the
// reload step: it exists only once the configuration is re-read.
const extraRole = `
[[role]]
name = "extra"
credential_command = ["/bin/echo", "{\"Version\":1,\"AccessKeyId\":\"AKIDEXTRA\",\"SecretAccessKey\":\"extra-secret\",\"SessionToken\":\"extra-token\",\"Expiration\":\"2099-01-01T00:00:00Z\"}"]
`

// liveConfig is the gateway's configuration in the booted root.
func liveConfig(endpoint, extra string) string {
	return `# written by the live systemd test
[identity]
thing_name  = "gw-0001"
certificate = "/etc/tether/device.crt"
private_key = "` + keyURI + `"

[aws]
region              = "eu-west-1"
credential_endpoint = "` + endpoint + `"
role_alias          = "gateway-role"
ca_file             = "/etc/tether/ca.crt"
` + extra
}

// makeToken makes a SoftHSM token with a device key on the host (with
// softhsm-test/token.sh, whose SoftHSM is the same version as the root's)
// and returns its token directory, to be copied into the root.
func makeToken(t *testing.T, pin string) string {
	t.Helper()
	dir := t.TempDir()
	pinFile := filepath.Join(dir, "pin")
	require.NoError(t, os.WriteFile(pinFile, []byte(pin+"\n"), 0o600))
	cmd := exec.Command("../softhsm-test/token.sh", filepath.Join(dir, "token"), "tether", pinFile, "device", "ec-p256")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "token.sh: %s", out)
	return filepath.Join(dir, "token", "tokens")
}

// signCSR issues the device certificate for the CSR tether printed.
func signCSR(t *testing.T, iot *iotcredtest.Server, csrPEM string) []byte {
	t.Helper()
	block, _ := pem.Decode([]byte(csrPEM))
	require.NotNil(t, block, "tether hsm csr printed no PEM: %s", csrPEM)
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	require.NoError(t, err)
	cert, err := iot.PKI.Sign("gw-0001", csr.PublicKey)
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
}

// credentialsAs runs `tether credential-process` as user in the root and
// returns the access key id it printed.
func credentialsAs(t *testing.T, r *nspawntest.Root, user, role string) string {
	t.Helper()
	argv := []string{"runuser", "-u", user, "--", "tether", "credential-process"}
	if role != "" {
		argv = append(argv, "--role", role)
	}
	out := r.Run(t, argv...)
	var c struct{ AccessKeyId, SecretAccessKey string }
	require.NoError(t, json.Unmarshal([]byte(out), &c), "credential-process printed: %q", out)
	require.NotEmpty(t, c.SecretAccessKey)
	return c.AccessKeyId
}

// waitRestarted waits until systemd runs the service again under a new PID.
func waitRestarted(t *testing.T, r *nspawntest.Root, oldPID string, timeout time.Duration) {
	t.Helper()
	r.WaitFor(t, timeout, "systemd to restart tether.service", func() bool {
		pid := r.Show(t, "tether.service", "MainPID")
		return pid != "0" && pid != oldPID && r.Show(t, "tether.service", "ActiveState") == "active"
	})
}

// checkHardening reads the running agent's process from the host and checks
// that each directive of tether.service took effect: the agent served
// credentials under all of them, so none of them breaks it.
func checkHardening(t *testing.T, r *nspawntest.Root) {
	inside := r.Show(t, "tether.service", "MainPID")
	pid := r.HostPID(t, inside)
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(t, err)
	field := func(name string) string {
		m := regexp.MustCompile(`(?m)^` + name + `:\s*(.*)$`).FindStringSubmatch(string(status))
		require.NotNil(t, m, "no %s in /proc/PID/status", name)
		return strings.TrimSpace(m[1])
	}
	tetherUID := strings.TrimSpace(r.Run(t, "id", "-u", "tether"))
	assert.Equal(t, tetherUID, strings.Fields(field("Uid"))[0], "User=tether")
	assert.Equal(t, "1", field("NoNewPrivs"), "NoNewPrivileges=yes")
	for _, c := range []string{"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"} {
		assert.Equal(t, "0000000000000000", field(c), "CapabilityBoundingSet= and AmbientCapabilities= (%s)", c)
	}
	assert.Equal(t, "2", field("Seccomp"), "SystemCallFilter=, RestrictAddressFamilies=, MemoryDenyWriteExecute= and friends install seccomp filters")
	filters, _ := strconv.Atoi(field("Seccomp_filters"))
	assert.GreaterOrEqual(t, filters, 1)
	assert.Equal(t, "0077", field("Umask"), "UMask=0077")

	uidMap, err := os.ReadFile(fmt.Sprintf("/proc/%d/uid_map", pid))
	require.NoError(t, err)
	assert.NotRegexp(t, `^\s*0\s+0\s+4294967295`, string(uidMap), "PrivateUsers=yes: a user namespace of its own")
	for _, ns := range []string{"mnt", "user", "uts"} {
		agent, err1 := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, ns))
		init, err2 := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", r.Leader, ns))
		require.NoError(t, err1)
		require.NoError(t, err2)
		assert.NotEqual(t, init, agent, "the agent has its own %s namespace (ProtectSystem/PrivateUsers/ProtectHostname)", ns)
	}

	mounts := parseMountinfo(t, pid)
	opts := func(point string) []string { return strings.Fields(mounts[point]) }
	assert.Contains(t, opts("/"), "ro", "ProtectSystem=strict: / read-only")
	assert.Contains(t, opts("/var/lib/tether"), "rw", "StateDirectory= writable")
	assert.Contains(t, mounts, "/home", "ProtectHome=yes")
	assert.Contains(t, mounts, "/tmp", "PrivateTmp=yes")
	assert.Contains(t, mounts, "/dev", "PrivateDevices=yes: a /dev of its own")
	// ProtectKernelTunables=yes: /sys read-only, and /proc/sys read-only
	// or, with ProcSubset=pid, not there at all.
	assert.Contains(t, opts("/sys"), "ro", "ProtectKernelTunables=yes")
	if _, ok := mounts["/proc/sys"]; ok {
		assert.Contains(t, opts("/proc/sys"), "ro", "ProtectKernelTunables=yes")
	} else {
		_, err := r.Exec(context.Background(), "nsenter", "-t", inside, "-m", "ls", "/proc/sys/kernel")
		assert.Error(t, err, "ProcSubset=pid hides /proc/sys")
	}
	assert.Contains(t, opts("/sys/fs/cgroup"), "ro", "ProtectControlGroups=yes")
	assert.Contains(t, opts("/proc"), "hidepid=invisible", "ProtectProc=invisible")
	assert.Contains(t, opts("/proc"), "subset=pid", "ProcSubset=pid")

	// What the agent sees of /dev: the pseudo-devices only, no kmsg
	// (ProtectKernelLogs), no disks or memory (PrivateDevices, DevicePolicy).
	devs := r.Run(t, "nsenter", "-t", inside, "-m", "ls", "/dev")
	for _, dev := range []string{"kmsg", "mem", "console"} {
		assert.NotContains(t, strings.Fields(devs), dev)
	}
	assert.Contains(t, strings.Fields(devs), "null")

	// systemd's own reading of the running unit.
	exposure := r.Run(t, "systemd-analyze", "security", "--no-pager", "tether.service")
	m := regexp.MustCompile(`Overall exposure level for tether.service: ([0-9.]+)`).FindStringSubmatch(exposure)
	require.NotNil(t, m, exposure)
	level, _ := strconv.ParseFloat(m[1], 64)
	assert.LessOrEqual(t, level, 2.0, "systemd-analyze security of the running unit")
	t.Logf("systemd-analyze security (live): %s", m[1])
}

// probeSandbox runs testdata/hardeningprobe as the unit's ExecStartPost=,
// which systemd starts with the service's own user, namespaces, mounts and
// seccomp filters, and checks that every attempt a directive forbids was
// refused (and what the agent needs still works).
func probeSandbox(t *testing.T, r *nspawntest.Root) {
	t.Helper()
	probe := filepath.Join(t.TempDir(), "hardening-probe")
	build := exec.Command("go", "build", "-o", probe, "./testdata/hardeningprobe")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "building the probe: %s", out)
	r.CopyIn(t, probe, "/usr/local/bin/hardening-probe")
	r.Run(t, "install", "-d", "-o", "tether", "-g", "tether", "/srv/tether-probe")
	dropIn := "/etc/systemd/system/tether.service.d/probe.conf"
	r.WriteFile(t, dropIn, []byte("[Service]\nExecStartPost=/usr/local/bin/hardening-probe\n"), 0o644)
	r.Systemctl(t, "daemon-reload")
	r.Systemctl(t, "restart", "tether.service")
	require.NoError(t, os.Remove(r.Path(dropIn)))
	r.Systemctl(t, "daemon-reload")

	var results []string
	for _, line := range strings.Split(r.Journal(t, "tether.service"), "\n") {
		if strings.HasPrefix(line, "probe ") {
			results = append(results, line)
		}
	}
	require.Contains(t, results, "probe done", "the probe did not finish: %v", results)
	ok := 0
	for _, line := range results {
		if line == "probe done" {
			continue
		}
		if assert.True(t, strings.HasSuffix(line, " ok"), line) {
			ok++
		}
	}
	assert.Equal(t, 18, ok, "one line per directive checked")
	t.Logf("sandbox probe: %d directives refused what they forbid", ok)
}

// parseMountinfo maps each mount point of pid's mount namespace to its mount
// and super-block options (the last mount of a point wins, as it is what
// the process sees).
func parseMountinfo(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
	require.NoError(t, err)
	mounts := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		if len(f) < 10 {
			continue
		}
		sep := 6
		for sep < len(f) && f[sep] != "-" {
			sep++
		}
		super := ""
		if sep+3 < len(f) {
			super = f[sep+3]
		}
		mounts[f[4]] = strings.Join(strings.Split(f[5], ","), " ") + " " + strings.Join(strings.Split(super, ","), " ")
	}
	return mounts
}
