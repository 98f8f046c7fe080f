// Package cgrouptest makes cgroup v2 groups named like systemd's units, so
// that tests can run a real program "in" a unit without a service manager:
// a process moved into /sys/fs/cgroup/tether-test-N.slice/uploader.service
// is, to everything that reads /proc/PID/cgroup or a socket's cgroup, in
// uploader.service. It needs root and a writable cgroup v2 hierarchy.
package cgrouptest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/tetherd/tether/platform"
)

// Group is one cgroup made for a test, removed when the test ends.
type Group struct {
	// Dir is its directory in the cgroup file system.
	Dir string
	// Path is its path as /proc/PID/cgroup shows it.
	Path string
}

// Available reports why this machine cannot make test cgroups, or nil.
func Available() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("not root: creating cgroups needs root")
	}
	root, err := platform.CgroupV2Mount()
	if err != nil {
		return err
	}
	probe, err := os.MkdirTemp(root, "tether-probe-")
	if err != nil {
		return fmt.Errorf("cgroup v2 at %s is not writable: %w", root, err)
	}
	return os.Remove(probe)
}

// New makes the cgroup SLICE/unit under the hierarchy's root, SLICE being
// a fresh tether-test-N.slice, and removes both when the test ends (after
// the processes in it are gone: end them in an earlier cleanup or before).
func New(t testing.TB, unit string) *Group {
	t.Helper()
	if err := Available(); err != nil {
		t.Skipf("cgrouptest: %v", err)
	}
	root, _ := platform.CgroupV2Mount()
	slice := filepath.Join(root, fmt.Sprintf("tether-test-%d-%d.slice", os.Getpid(), time.Now().UnixNano()))
	dir := filepath.Join(slice, unit)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("cgrouptest: %v", err)
	}
	t.Cleanup(func() {
		// A process that just exited may hold the group for a moment.
		for i := 0; i < 50 && os.Remove(dir) != nil; i++ {
			time.Sleep(20 * time.Millisecond)
		}
		os.Remove(slice)
	})
	return &Group{Dir: dir, Path: "/" + filepath.Base(slice) + "/" + unit}
}

// Start starts cmd inside the group (clone3 with CLONE_INTO_CGROUP), so the
// program is in the unit from its first instruction, as systemd starts a
// service's processes. The test must wait for it before the group is removed.
func (g *Group) Start(t testing.TB, cmd *exec.Cmd) {
	t.Helper()
	dir, err := os.Open(g.Dir)
	if err != nil {
		t.Fatalf("cgrouptest: %v", err)
	}
	defer dir.Close()
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.UseCgroupFD, cmd.SysProcAttr.CgroupFD = true, int(dir.Fd())
	if err := cmd.Start(); err != nil {
		t.Fatalf("cgrouptest: starting %s in %s: %v", cmd.Path, g.Path, err)
	}
}
