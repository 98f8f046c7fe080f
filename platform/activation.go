package platform

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strings"

	"github.com/coreos/go-systemd/v22/activation"
)

// ActivatedListener returns the stream listener systemd passed under
// FileDescriptorName=name (LISTEN_FDS/LISTEN_FDNAMES), or nil when the process
// was not socket-activated. Passed descriptors that are not used are closed,
// and the LISTEN_* variables are removed so child processes do not inherit
// them.
func ActivatedListener(name string) (net.Listener, error) {
	files := activation.Files(true)
	if len(files) == 0 {
		return nil, nil
	}
	var (
		found net.Listener
		names []string
		errs  []error
	)
	for _, f := range files {
		names = append(names, f.Name())
		if f.Name() != name || found != nil {
			_ = f.Close()
			continue
		}
		l, err := net.FileListener(f)
		_ = f.Close() // FileListener holds its own duplicate
		if err != nil {
			errs = append(errs, fmt.Errorf("socket activation: descriptor %q is not a listening stream socket: %w: use ListenStream= in the socket unit", name, err))
			continue
		}
		found = l
	}
	if found != nil {
		return found, nil
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return nil, fmt.Errorf("socket activation: systemd passed descriptors named %s but none named %q: set FileDescriptorName=%s in the socket unit",
		strings.Join(names, ","), name, name)
}

// UnixListener returns the activated listener called name if systemd passed
// one, and otherwise listens on path itself: a stale socket left by a crashed
// run is removed, and the new socket gets mode perm. activated reports which
// happened; an activated socket belongs to systemd and is not unlinked on
// Close.
func UnixListener(name, path string, perm fs.FileMode) (l net.Listener, activated bool, err error) {
	l, err = ActivatedListener(name)
	if err != nil || l != nil {
		return l, l != nil, err
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, false, fmt.Errorf("socket %s exists and is not a socket: remove it or set [serve] socket", path)
		}
		if c, err := net.Dial("unix", path); err == nil {
			_ = c.Close()
			return nil, false, fmt.Errorf("socket %s is in use by another process: is another tether running?", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, false, fmt.Errorf("remove stale socket %s: %w", path, err)
		}
	}
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, false, fmt.Errorf("listen on %s: %w: create its directory (systemd: RuntimeDirectory=tether) or set [serve] socket", path, err)
	}
	if err := os.Chmod(path, perm); err != nil {
		_ = ul.Close()
		return nil, false, fmt.Errorf("set mode %v on socket %s: %w", perm, path, err)
	}
	return ul, false, nil
}
