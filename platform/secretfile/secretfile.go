// Package secretfile holds the one rule for files that hold a secret (a
// private key, a PIN, an MFA seed): a regular file that only its owner may
// access. hsm and credprovider check their files with it before reading
// them, so `tether config check` and `tether run` refuse the same files.
package secretfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// ErrTooOpen is matched (errors.Is) by the error Check returns for a file
// that group or others may access.
var ErrTooOpen = errors.New("secret file accessible to group or others")

// ModeError is a secret file whose mode lets group or others access it.
type ModeError struct {
	Path string
	Mode fs.FileMode
}

func (e *ModeError) Error() string {
	return fmt.Sprintf("%s has mode %04o, but it holds a secret: only its owner may access it; run chmod 600 %s", e.Path, e.Mode, e.Path)
}

// Is makes a ModeError match ErrTooOpen.
func (e *ModeError) Is(target error) bool { return target == ErrTooOpen }

// Check returns an error unless path is a regular file that only its owner
// may access. The error names the path and what to do, never the contents
// (Check does not read them): an *fs.PathError when the file cannot be
// looked at, a *ModeError when it is too open.
func Check(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return &ModeError{Path: path, Mode: perm}
	}
	return nil
}
