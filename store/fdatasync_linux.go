package store

import (
	"os"

	"golang.org/x/sys/unix"
)

// fdatasync flushes f's data without the metadata a pure overwrite does
// not need (its mtime), which an fsync would journal every time.
func fdatasync(f *os.File) error {
	for {
		err := unix.Fdatasync(int(f.Fd()))
		if err != unix.EINTR {
			return err
		}
	}
}
