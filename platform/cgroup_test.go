package platform_test

import (
	"os"
	"os/exec"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/platform"
	"github.com/tetherd/tether/platform/cgrouptest"
)

// TestUnitOfCgroup ensures that the unit of a cgroup path is read as systemd
// reads it: slices skipped, the first other component the unit, and a user's
// own units counted as their user manager's.
func TestUnitOfCgroup(t *testing.T) {
	for path, want := range map[string]string{
		"/system.slice/uploader.service":                                    "uploader.service",
		"/system.slice/uploader.service/worker":                             "uploader.service",
		"/system.slice/system-getty.slice/getty@tty1.service":               "getty@tty1.service",
		"/user.slice/user-1000.slice/user@1000.service/app.slice/x.service": "user@1000.service",
		"/user.slice/user-1000.slice/session-3.scope":                       "session-3.scope",
		"/machine.slice/machine-a.scope/payload/system.slice/x.service":     "machine-a.scope",
		"/":                          "",
		"/system.slice":              "",
		"/process_api/af64e01":       "",
		"/tether.slice/foo@.service": "",
	} {
		assert.Equal(t, want, platform.UnitOfCgroup(path), path)
	}
}

// TestValidUnitName ensures that unit names follow systemd's rules and that
// templates, which no process runs in, are refused.
func TestValidUnitName(t *testing.T) {
	for _, ok := range []string{"uploader.service", "getty@tty1.service", `dev-sda\x2d1.mount`, "run-u7.scope", "a:b.socket"} {
		assert.True(t, platform.ValidUnitName(ok), ok)
	}
	for _, bad := range []string{"", "uploader", ".service", "foo@.service", "a b.service", "foo.timer", "a@b@c.service", "x/y.service"} {
		assert.False(t, platform.ValidUnitName(bad), bad)
	}
}

// TestProcessCgroup ensures that a real process moved into a cgroup named
// like a unit is found in that unit, by its pid and by the cgroup's id.
func TestProcessCgroup(t *testing.T) {
	g := cgrouptest.New(t, "uploader.service")
	cmd := exec.Command("sleep", "60")
	g.Start(t, cmd)
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	path, err := platform.ProcessCgroup(cmd.Process.Pid)
	require.NoError(t, err)
	assert.Equal(t, g.Path, path)
	assert.Equal(t, "uploader.service", platform.UnitOfCgroup(path))

	st, err := os.Stat(g.Dir)
	require.NoError(t, err)
	byID, err := platform.CgroupByID(st.Sys().(*syscall.Stat_t).Ino)
	require.NoError(t, err)
	assert.Equal(t, g.Path, byID)

	_, err = platform.CgroupByID(1 << 62)
	assert.Error(t, err)
}

// TestPeersHidden ensures that a process in the initial user namespace with
// a plain /proc is told it sees its peers, and one in a user namespace of
// its own (as under PrivateUsers=yes) is told why it does not.
func TestPeersHidden(t *testing.T) {
	if os.Getenv("TETHER_PEERS_HIDDEN_CHILD") == "1" {
		if err := platform.PeersHidden(); err != nil {
			os.Stdout.WriteString(err.Error())
		}
		os.Exit(0)
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root, to compare with a user namespace of its own")
	}
	require.NoError(t, platform.PeersHidden(), "this test runs as root on the host")
	cmd := exec.Command(os.Args[0], "-test.run=^TestPeersHidden$")
	cmd.Env = append(os.Environ(), "TETHER_PEERS_HIDDEN_CHILD=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUSER,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1}}}
	out, err := cmd.Output()
	require.NoError(t, err)
	assert.Contains(t, string(out), "PrivateUsers=yes")
}
