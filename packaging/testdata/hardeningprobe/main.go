// Command hardeningprobe runs inside tether.service's sandbox (the live
// systemd test adds it as ExecStartPost=, which systemd runs with the same
// user, namespaces, seccomp filters and mounts as ExecStart=) and tries what
// each hardening directive forbids. It prints one line per directive,
// "probe DIRECTIVE ok" when the attempt was refused as the directive says
// (or, for what the service must be able to do, succeeded),
// or "probe DIRECTIVE FAIL: what happened", and always exits 0 so the
// service's start does not depend on it.
package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

func main() {
	// It tries to write where it must not: never outside the unit.
	if os.Getenv("INVOCATION_ID") == "" || os.Geteuid() == 0 {
		fmt.Fprintln(os.Stderr, "hardeningprobe: runs only as tether.service's ExecStartPost=")
		os.Exit(2)
	}
	dir := os.Getenv("STATE_DIRECTORY")
	if dir == "" {
		dir = "/var/lib/tether"
	}
	checks := []struct {
		directive string
		try       func() error
		want      error // the errno the directive makes the attempt fail with; nil: must succeed
	}{
		// /srv/tether-probe belongs to tether (the test makes it): only
		// the read-only mount can refuse the write.
		{"ProtectSystem=strict", func() error { return os.WriteFile("/srv/tether-probe/probe", nil, 0o600) }, syscall.EROFS},
		{"ProtectSystem=strict(/usr)", func() error { return os.WriteFile("/usr/probe", nil, 0o600) }, syscall.EROFS},
		{"ProtectHome=yes", func() error { _, err := os.ReadDir("/root"); return err }, syscall.EACCES},
		{"ProtectControlGroups=yes", func() error { return os.Mkdir("/sys/fs/cgroup/probe", 0o755) }, syscall.EROFS},
		{"ProtectProc=invisible", func() error { _, err := os.Stat("/proc/1/status"); return err }, syscall.ENOENT},
		{"ProcSubset=pid", func() error { _, err := os.Stat("/proc/sys/kernel"); return err }, syscall.ENOENT},
		{"PrivateDevices=yes", func() error { _, err := os.Stat("/dev/mem"); return err }, syscall.ENOENT},
		{"ProtectKernelLogs=yes", func() error { _, err := os.Stat("/dev/kmsg"); return err }, syscall.ENOENT},
		{"RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6", func() error {
			fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_ROUTE)
			if err == nil {
				unix.Close(fd)
			}
			return err
		}, syscall.EAFNOSUPPORT},
		{"RestrictNamespaces=yes", func() error { return unix.Unshare(unix.CLONE_NEWUSER) }, syscall.EPERM},
		{"MemoryDenyWriteExecute=yes", func() error {
			b, err := unix.Mmap(-1, 0, 4096, unix.PROT_READ|unix.PROT_WRITE|unix.PROT_EXEC, unix.MAP_PRIVATE|unix.MAP_ANON)
			if err == nil {
				unix.Munmap(b)
			}
			return err
		}, syscall.EPERM},
		{"RestrictSUIDSGID=yes", func() error {
			p := filepath.Join(dir, "probe-suid")
			defer os.Remove(p)
			if err := os.WriteFile(p, nil, 0o700); err != nil {
				return fmt.Errorf("setup: %w", err)
			}
			return unix.Chmod(p, 0o4700)
		}, syscall.EPERM},
		{"LockPersonality=yes", func() error { _, _, e := unix.Syscall(unix.SYS_PERSONALITY, 0x0008, 0, 0); return errnoOrNil(e) }, syscall.EPERM},
		{"SystemCallFilter=~@resources", func() error { return unix.Setpriority(unix.PRIO_PROCESS, 0, 19) }, syscall.EPERM},
		{"SystemCallFilter=~@privileged", func() error { return unix.Chroot("/") }, syscall.EPERM},
		{"RestrictRealtime=yes", func() error {
			_, _, e := unix.Syscall(unix.SYS_SCHED_SETSCHEDULER, 0, 1 /* SCHED_FIFO */, 0)
			return errnoOrNil(e)
		}, syscall.EPERM},
		{"UMask=0077", func() error {
			p := filepath.Join(dir, "probe-umask")
			defer os.Remove(p)
			if err := os.WriteFile(p, nil, 0o666); err != nil {
				return err
			}
			fi, err := os.Stat(p)
			if err != nil {
				return err
			}
			if fi.Mode().Perm() != 0o600 {
				return fmt.Errorf("a 0666 file was created %v", fi.Mode().Perm())
			}
			return nil
		}, nil},
		{"StateDirectory=tether (writable)", func() error {
			p := filepath.Join(dir, "probe-write")
			defer os.Remove(p)
			return os.WriteFile(p, []byte("x"), 0o600)
		}, nil},
	}
	for _, c := range checks {
		err := c.try()
		switch {
		case errors.Is(err, c.want):
			fmt.Printf("probe %s ok\n", c.directive)
		case err == nil:
			fmt.Printf("probe %s FAIL: allowed\n", c.directive)
		default:
			fmt.Printf("probe %s FAIL: %v (want %v)\n", c.directive, err, c.want)
		}
	}
	fmt.Println("probe done")
}

func errnoOrNil(e syscall.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}
