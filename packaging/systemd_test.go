// Package packaging holds no Go code: its tests check the systemd units,
// sysusers/tmpfiles snippets and default configuration shipped in this
// directory with systemd's own tools.
package packaging

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	toml "github.com/pelletier/go-toml/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// tool finds a systemd binary or fails naming the Debian package to install.
func tool(t *testing.T, name string) string {
	t.Helper()
	for _, p := range []string{name, "/usr/bin/" + name, "/bin/" + name} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	t.Fatalf("%s not found: install the Debian package systemd (apt-get install -y systemd)", name)
	return ""
}

// stageUnits copies the units into a temporary directory with ExecStart
// pointing at an executable that exists (verify checks it), with the named
// optional drop-ins from systemd/tether.service.d and extra lines appended to
// the service.
func stageUnits(t *testing.T, dropIns []string, extraService string) string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "tether")
	require.NoError(t, os.WriteFile(bin, []byte("#!/bin/sh\nexit 0\n"), 0o755))

	svc, err := os.ReadFile("systemd/tether.service")
	require.NoError(t, err)
	require.Contains(t, string(svc), "ExecStart=/usr/bin/tether ")
	svc = bytes.Replace(svc, []byte("ExecStart=/usr/bin/tether "), []byte("ExecStart="+bin+" "), 1)
	if extraService != "" {
		// Appended after [Install], so reopen the section.
		svc = append(svc, "\n[Service]\n"+extraService...)
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tether.service"), svc, 0o644))

	sock, err := os.ReadFile("systemd/tether.socket")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tether.socket"), sock, 0o644))

	if len(dropIns) > 0 {
		require.NoError(t, os.Mkdir(filepath.Join(dir, "tether.service.d"), 0o755))
	}
	for _, name := range dropIns {
		conf, err := os.ReadFile(filepath.Join("systemd/tether.service.d", name))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, "tether.service.d", name), conf, 0o644))
	}
	return dir
}

// verify runs systemd-analyze verify; "clean" means no diagnostics at all,
// because verify exits 0 even for unknown keys.
func verify(t *testing.T, dir string) string {
	t.Helper()
	cmd := exec.Command(tool(t, "systemd-analyze"), "verify",
		filepath.Join(dir, "tether.service"), filepath.Join(dir, "tether.socket"))
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return strings.TrimSpace(string(out)) + " (" + err.Error() + ")"
	}
	return strings.TrimSpace(string(out))
}

// unitCases are the shipped combinations: the plain unit and each optional
// drop-in an installer may add.
var unitCases = []struct {
	name    string
	dropIns []string
}{
	{"service and socket", nil},
	{"with the pkcs11 PIN drop-in", []string{"pkcs11-pin.conf"}},
	{"with the TPM drop-in", []string{"tpm2.conf"}},
	{"with both drop-ins", []string{"pkcs11-pin.conf", "tpm2.conf"}},
	{"with the workloads drop-in", []string{"workloads.conf"}},
	{"with the local endpoints drop-in", []string{"local-endpoints.conf"}},
}

// TestUnitsVerifyClean ensures that systemd-analyze verify finds nothing wrong with the shipped units.
func TestUnitsVerifyClean(t *testing.T) {
	for _, tc := range unitCases {
		t.Run(tc.name, func(t *testing.T) {
			assert.Empty(t, verify(t, stageUnits(t, tc.dropIns, "")))
		})
	}
}

// TestVerifyDetectsMistakes ensures that systemd-analyze verify finds a broken unit, so its clean result above means something.
//
// TestVerifyDetectsMistakes shows the clean result above is meaningful.
func TestVerifyDetectsMistakes(t *testing.T) {
	out := verify(t, stageUnits(t, nil, "ProtectSystm=strict\n"))
	assert.Contains(t, out, "ProtectSystm")
}

var exposureRE = regexp.MustCompile(`Overall exposure level for tether\.service: ([0-9.]+)`)

func exposure(t *testing.T, dir string) float64 {
	t.Helper()
	cmd := exec.Command(tool(t, "systemd-analyze"), "security", "--offline=true", "--no-pager",
		filepath.Join(dir, "tether.service"))
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	m := exposureRE.FindSubmatch(out)
	require.NotNil(t, m, "no exposure line in systemd-analyze security output (err %v):\n%s", err, out)
	v, err := strconv.ParseFloat(string(m[1]), 64)
	require.NoError(t, err)
	return v
}

// TestUnitExposure ensures that systemd-analyze security rates the hardened unit's exposure at 2.0 or less, and notices a weakened one.
func TestUnitExposure(t *testing.T) {
	for _, tc := range unitCases {
		t.Run(tc.name, func(t *testing.T) {
			got := exposure(t, stageUnits(t, tc.dropIns, ""))
			assert.LessOrEqual(t, got, 2.0, "systemd-analyze security exposure of tether.service")
			t.Logf("exposure %.1f", got)
		})
	}

	// The same measurement notices a weakened unit, so the bound is a real check.
	got := exposure(t, stageUnits(t, nil, ""))
	weak := exposure(t, stageUnits(t, nil, "ProtectSystem=no\nCapabilityBoundingSet=~\nPrivateDevices=no\nPrivateUsers=no\nRestrictNamespaces=no\nSystemCallFilter=\n"))
	assert.Greater(t, weak, got)
}

// TestSysusersAndTmpfiles ensures that the sysusers and tmpfiles files create the user and directories the unit expects.
func TestSysusersAndTmpfiles(t *testing.T) {
	root := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(root, "etc"), 0o755))

	// With --root the tools resolve relative file names inside the root.
	sysusers, err := filepath.Abs("systemd/sysusers.d/tether.conf")
	require.NoError(t, err)
	tmpfiles, err := filepath.Abs("systemd/tmpfiles.d/tether.conf")
	require.NoError(t, err)

	out, err := exec.Command(tool(t, "systemd-sysusers"), "--root="+root, sysusers).CombinedOutput()
	require.NoError(t, err, "%s", out)
	passwd, err := os.ReadFile(filepath.Join(root, "etc/passwd"))
	require.NoError(t, err)
	group, err := os.ReadFile(filepath.Join(root, "etc/group"))
	require.NoError(t, err)
	user := entry(t, passwd, "tether")
	grp := entry(t, group, "tether")
	assert.Equal(t, grp[2], user[3], "tether's primary group is tether")
	assert.Equal(t, "/var/lib/tether", user[5])
	assert.Equal(t, "/usr/sbin/nologin", user[6])
	uid, err := strconv.Atoi(user[2])
	require.NoError(t, err)
	assert.Less(t, uid, 1000, "a system account")

	out, err = exec.Command(tool(t, "systemd-tmpfiles"), "--create", "--root="+root, tmpfiles).CombinedOutput()
	require.NoError(t, err, "%s", out)
	cases := []struct {
		path     string
		mode     os.FileMode
		uid, gid string
	}{
		{"etc/tether", 0o750, "0", grp[2]},
		{"var/lib/tether", 0o700, user[2], grp[2]},
	}
	for _, tc := range cases {
		fi, err := os.Stat(filepath.Join(root, tc.path))
		require.NoError(t, err, tc.path)
		assert.True(t, fi.IsDir(), tc.path)
		assert.Equal(t, tc.mode, fi.Mode().Perm(), tc.path)
		uid, gid := owner(fi)
		assert.Equal(t, tc.uid, uid, tc.path)
		assert.Equal(t, tc.gid, gid, tc.path)
	}
}

// entry returns the colon-separated fields of name's line in a passwd or
// group file.
func entry(t *testing.T, file []byte, name string) []string {
	t.Helper()
	s := bufio.NewScanner(bytes.NewReader(file))
	for s.Scan() {
		if f := strings.Split(s.Text(), ":"); f[0] == name {
			return f
		}
	}
	t.Fatalf("no %q entry in:\n%s", name, file)
	return nil
}

// unitValue returns the value of the last key= line in a unit file.
func unitValue(t *testing.T, file, key string) string {
	t.Helper()
	data, err := os.ReadFile(file)
	require.NoError(t, err)
	var v string
	found := false
	for line := range strings.Lines(string(data)) {
		if k, val, ok := strings.Cut(strings.TrimSpace(line), "="); ok && k == key {
			v, found = val, true
		}
	}
	require.True(t, found, "%s has no %s=", file, key)
	return v
}

// TestUnitsAgreeWithDefaultConfig ensures that the units and the shipped configuration name the same socket, state directory and configuration path.
//
// TestUnitsAgreeWithDefaultConfig catches the units and the shipped
// configuration drifting apart: the socket, the state directory and the
// configuration path are named in both.
func TestUnitsAgreeWithDefaultConfig(t *testing.T) {
	data, err := os.ReadFile("tether.toml")
	require.NoError(t, err)
	var cfg struct {
		Serve struct {
			Socket    string `toml:"socket"`
			TokenFile string `toml:"token_file"`
		} `toml:"serve"`
		State struct {
			Path string `toml:"path"`
		} `toml:"state"`
	}
	require.NoError(t, toml.Unmarshal(data, &cfg), "packaging/tether.toml is not valid TOML")

	assert.Equal(t, cfg.Serve.Socket, unitValue(t, "systemd/tether.socket", "ListenStream"))
	assert.Equal(t, "api", unitValue(t, "systemd/tether.socket", "FileDescriptorName"))

	runtimeDir := "/run/" + unitValue(t, "systemd/tether.service", "RuntimeDirectory")
	assert.Equal(t, runtimeDir, filepath.Dir(cfg.Serve.Socket))
	assert.Equal(t, runtimeDir, filepath.Dir(cfg.Serve.TokenFile))
	assert.Equal(t, "/var/lib/"+unitValue(t, "systemd/tether.service", "StateDirectory"), filepath.Dir(cfg.State.Path))
	assert.Contains(t, unitValue(t, "systemd/tether.service", "ExecStart"),
		" -c /etc/"+unitValue(t, "systemd/tether.service", "ConfigurationDirectory")+"/tether.toml")
}
