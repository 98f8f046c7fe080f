// Package nspawntest boots a Debian 12 (bookworm) root with systemd as PID 1
// under systemd-nspawn, for tests that need a real service manager: install
// a package with dpkg, start units, read the journal, kill and freeze
// services and watch systemd react.
//
// The root is made once with debootstrap and cached (see Options.CacheDir);
// every Boot runs on a throw-away copy, so tests never see each other's
// changes and a rerun costs a copy, not a debootstrap. A clean machine needs
// only root, debootstrap and systemd-nspawn (Debian packages debootstrap and
// systemd-container) and a Debian mirror.
//
// The container shares the host's network, so it reaches services a test
// starts on the host's 127.0.0.1 (a simulator, a broker). Files reach it
// through Root.WriteFile and Root.CopyIn (its root is a directory on the
// host); its /tmp and /run are its own.
//
// A test that wants another drop-in in the same booted root (the TPM one,
// say) writes it with WriteFile under /etc/systemd/system/tether.service.d/,
// runs Systemctl(t, "daemon-reload") and restarts the unit; see
// packaging/live_test.go for the whole flow.
package nspawntest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BasePackages are the Debian packages every cached root has besides
// debootstrap's minbase: systemd as init and what a package's maintainer
// scripts may call.
var BasePackages = []string{"systemd", "systemd-sysv", "dbus", "adduser", "ca-certificates"}

// Options configure Boot.
type Options struct {
	// CacheDir holds the debootstrap'd roots, one per package set. Default:
	// $TETHER_NSPAWN_CACHE, else $XDG_CACHE_HOME/tether/nspawn, else
	// $HOME/.cache/tether/nspawn.
	CacheDir string
	// Packages are Debian packages to include in the root besides
	// BasePackages (e.g. softhsm2, tpm2-tools). Each distinct set is a
	// cached root of its own.
	Packages []string
	// BootTimeout bounds the wait for systemd to reach a running system.
	// Default 90s.
	BootTimeout time.Duration
	// NspawnArgs are more systemd-nspawn arguments, e.g. a device for the
	// container: "--bind=/dev/tpmrm0", "--property=DeviceAllow=/dev/tpmrm0 rw".
	NspawnArgs []string
}

// Root is a booted Debian root.
type Root struct {
	// Dir is the root's directory on the host.
	Dir string
	// Leader is the host PID of the container's systemd (PID 1 inside).
	Leader int

	nspawn *exec.Cmd
	log    string
}

// Available reports why this machine cannot boot a root (not root, no
// systemd-nspawn, no debootstrap), or nil when it can.
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("not root: systemd-nspawn and debootstrap need root")
	}
	for _, need := range []struct{ bin, pkg string }{
		{"systemd-nspawn", "systemd-container"}, {"debootstrap", "debootstrap"}, {"nsenter", "util-linux"},
	} {
		if _, err := exec.LookPath(need.bin); err != nil {
			return fmt.Errorf("%s missing: apt-get install %s", need.bin, need.pkg)
		}
	}
	return nil
}

// Boot returns a freshly booted copy of the cached root, stopped and removed
// when the test ends. It fails the test (naming what is missing) when the
// machine cannot boot one; call Available first to skip instead.
func Boot(t testing.TB, o Options) *Root {
	t.Helper()
	if err := Available(); err != nil {
		t.Fatalf("nspawntest: %v", err)
	}
	if o.BootTimeout == 0 {
		o.BootTimeout = 90 * time.Second
	}
	base, err := cachedBase(o)
	if err != nil {
		t.Fatalf("nspawntest: %v", err)
	}
	dir, err := os.MkdirTemp("", "nspawntest-")
	if err != nil {
		t.Fatal(err)
	}
	r := &Root{Dir: dir, log: dir + ".boot.log"}
	t.Cleanup(func() { r.stop(); os.RemoveAll(dir); os.Remove(r.log) })
	if out, err := exec.Command("cp", "-a", base+"/.", dir+"/").CombinedOutput(); err != nil {
		t.Fatalf("nspawntest: copying the cached root: %v: %s", err, out)
	}
	logf, err := os.Create(r.log)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	args := append([]string{"-q", "-D", dir, "--boot", "--register=no", "--keep-unit",
		"--machine=" + filepath.Base(dir)}, o.NspawnArgs...)
	r.nspawn = exec.Command("systemd-nspawn", args...)
	r.nspawn.Stdout, r.nspawn.Stderr = logf, logf
	// Its own process group, so a ^C of go test reaches nspawn through the
	// cleanup and not mid-boot.
	r.nspawn.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := r.nspawn.Start(); err != nil {
		t.Fatalf("nspawntest: systemd-nspawn: %v", err)
	}
	deadline := time.Now().Add(o.BootTimeout)
	for {
		if r.Leader == 0 {
			r.Leader = childNamed(r.nspawn.Process.Pid, "systemd")
		}
		if r.Leader != 0 {
			state, _ := r.Exec(context.Background(), "systemctl", "is-system-running")
			switch strings.TrimSpace(string(state)) {
			case "running":
				return r
			case "degraded":
				failed, _ := r.Exec(context.Background(), "systemctl", "--failed", "--no-legend")
				t.Fatalf("nspawntest: the root booted degraded: %s", failed)
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(r.log)
			t.Fatalf("nspawntest: the root did not boot within %v; nspawn said: %s", o.BootTimeout, lastLines(b, 5))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Exec runs argv inside the root (all of its namespaces) as root, returning
// standard output and standard error together.
func (r *Root) Exec(ctx context.Context, argv ...string) ([]byte, error) {
	args := append([]string{"-t", strconv.Itoa(r.Leader), "-a", "--"}, argv...)
	cmd := exec.CommandContext(ctx, "nsenter", args...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0"}
	return cmd.CombinedOutput()
}

// Run is Exec that fails the test when argv fails.
func (r *Root) Run(t testing.TB, argv ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := r.Exec(ctx, argv...)
	if err != nil {
		t.Fatalf("in the root: %s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return string(out)
}

// Systemctl runs systemctl ARGS inside the root and fails the test when it fails.
func (r *Root) Systemctl(t testing.TB, args ...string) string {
	t.Helper()
	return r.Run(t, append([]string{"systemctl"}, args...)...)
}

// Show returns one property of a unit (systemctl show -P).
func (r *Root) Show(t testing.TB, unit, property string) string {
	t.Helper()
	return strings.TrimSpace(r.Run(t, "systemctl", "show", "-P", property, unit))
}

// Journal returns the unit's journal since the boot, messages only.
func (r *Root) Journal(t testing.TB, unit string) string {
	t.Helper()
	return r.Run(t, "journalctl", "--no-pager", "-o", "cat", "-u", unit)
}

// LogJournalOnFailure logs the last 60 lines of the units' journal when t
// has failed by the end of the test: what a failed step needs explained.
func (r *Root) LogJournalOnFailure(t testing.TB, units ...string) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		argv := []string{"journalctl", "--no-pager", "-n", "60"}
		for _, u := range units {
			argv = append(argv, "-u", u)
		}
		out, _ := r.Exec(context.Background(), argv...)
		t.Logf("the units' journal:\n%s", out)
	})
}

// HostPID maps a PID inside the root to the host's PID of the same process,
// for /proc inspection from the host.
func (r *Root) HostPID(t testing.TB, pid string) int {
	t.Helper()
	// Every process in the root is a descendant of Leader; NSpid's last
	// field is the PID inside, its first the host's.
	matches, _ := filepath.Glob("/proc/[0-9]*/status")
	for _, m := range matches {
		b, err := os.ReadFile(m)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(strings.TrimPrefix(line, "NSpid:")); strings.HasPrefix(line, "NSpid:") && len(f) > 1 && f[len(f)-1] == pid {
				host, _ := strconv.Atoi(f[0])
				if inRoot(host, r.Leader) {
					return host
				}
			}
		}
	}
	t.Fatalf("nspawntest: no host process for PID %s in the root", pid)
	return 0
}

// WriteFile writes a file inside the root (creating its directories).
func (r *Root) WriteFile(t testing.TB, path string, data []byte, mode os.FileMode) {
	t.Helper()
	p := r.Path(path)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

// CopyIn copies a host file or directory to path inside the root.
func (r *Root) CopyIn(t testing.TB, host, path string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(r.Path(path)), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "-a", host, r.Path(path)).CombinedOutput(); err != nil {
		t.Fatalf("nspawntest: copy %s: %v: %s", host, err, out)
	}
}

// Path is the host path of path inside the root. Not for /tmp and /run,
// which are the container's own file systems.
func (r *Root) Path(path string) string { return filepath.Join(r.Dir, path) }

// WaitFor polls cond every 200ms until it holds, failing the test with what
// after timeout. For waiting on a real systemd, whose clock no test can fake.
func (r *Root) WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (r *Root) stop() {
	if r.nspawn == nil || r.nspawn.Process == nil {
		return
	}
	if r.Leader != 0 {
		// A clean poweroff lets nspawn unmount and exit by itself.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		r.Exec(ctx, "systemctl", "poweroff", "--no-block")
		cancel()
	}
	done := make(chan struct{})
	go func() { r.nspawn.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		r.nspawn.Process.Kill()
		<-done
	}
}

// cachedBase returns the cached debootstrap'd root for o.Packages, making it
// when missing. A lock file keeps parallel test binaries from building the
// same root twice.
func cachedBase(o Options) (string, error) {
	cache := o.CacheDir
	if cache == "" {
		cache = os.Getenv("TETHER_NSPAWN_CACHE")
	}
	if cache == "" {
		if xdg := os.Getenv("XDG_CACHE_HOME"); xdg != "" {
			cache = filepath.Join(xdg, "tether", "nspawn")
		} else {
			home, _ := os.UserHomeDir()
			cache = filepath.Join(home, ".cache", "tether", "nspawn")
		}
	}
	pkgs := append(append([]string{}, BasePackages...), o.Packages...)
	sum := sha256.Sum256([]byte(strings.Join(pkgs, ",")))
	base := filepath.Join(cache, "bookworm-"+hex.EncodeToString(sum[:6]))
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(base+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(base, ".complete")); err == nil {
		return base, nil
	}
	os.RemoveAll(base)
	tmp := base + ".new"
	os.RemoveAll(tmp)
	logFile := base + ".debootstrap.log"
	out, err := exec.Command("debootstrap", "--variant=minbase", "--include="+strings.Join(pkgs, ","),
		"bookworm", tmp, mirror()).CombinedOutput()
	os.WriteFile(logFile, out, 0o644)
	if err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("debootstrap failed (log %s): %s", logFile, lastLines(out, 3))
	}
	// A booted copy must not wait for a console login or a network it has
	// not got; and it takes the host's trust, as a real gateway has its own.
	os.WriteFile(filepath.Join(tmp, "etc/hostname"), []byte("nspawntest\n"), 0o644)
	if b, err := os.ReadFile("/etc/ssl/certs/ca-certificates.crt"); err == nil {
		os.WriteFile(filepath.Join(tmp, "etc/ssl/certs/ca-certificates.crt"), b, 0o644)
	}
	if err := os.WriteFile(filepath.Join(tmp, ".complete"), nil, 0o644); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, base); err != nil {
		return "", err
	}
	return base, nil
}

// mirror is the host's Debian mirror (its deb822 or one-line sources), or
// deb.debian.org.
func mirror() string {
	if b, err := os.ReadFile("/etc/apt/sources.list.d/debian.sources"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if u, ok := strings.CutPrefix(line, "URIs:"); ok {
				if f := strings.Fields(u); len(f) > 0 {
					return f[0]
				}
			}
		}
	}
	if b, err := os.ReadFile("/etc/apt/sources.list"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) > 1 && f[0] == "deb" {
				return f[1]
			}
		}
	}
	return "http://deb.debian.org/debian"
}

// childNamed returns the PID of a child of parent whose command is name, or 0.
func childNamed(parent int, name string) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", parent, parent))
	if err != nil {
		return 0
	}
	for _, f := range strings.Fields(string(b)) {
		pid, _ := strconv.Atoi(f)
		if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err == nil && strings.TrimSpace(string(comm)) == name {
			return pid
		}
	}
	return 0
}

// inRoot reports whether host PID pid descends from leader.
func inRoot(pid, leader int) bool {
	for i := 0; i < 64 && pid > 1; i++ {
		if pid == leader {
			return true
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return false
		}
		// The parent PID follows the ")" that ends the command name.
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) < 2 {
			return false
		}
		pid, _ = strconv.Atoi(f[1])
	}
	return false
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
