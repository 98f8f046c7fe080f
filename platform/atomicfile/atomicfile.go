// Package atomicfile holds the one way tether writes a file that must
// survive a crash or a power cut whole: certificates, key files, the
// configuration's thing name, the socket's token. The data goes to a
// temporary file beside the target, is synced, moved into place and the
// directory synced, so that after a reboot the path holds the old content
// or the new one, never a part or nothing. SyncDir alone serves what
// renames a file of its own (a staged certificate, a TPM key, the outbox
// log).
package atomicfile

import (
	"os"
	"path/filepath"
)

// WriteFile replaces path with data, mode perm. On error path is unchanged
// and no temporary file is left beside it.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	return write(path, data, perm, os.Rename)
}

// Create writes data to a new file path, mode perm. It fails with an error
// matching fs.ErrExist when path exists, also when it appears while Create
// runs: the file is linked into place, which never replaces one.
func Create(path string, data []byte, perm os.FileMode) error {
	return write(path, data, perm, os.Link)
}

func write(path string, data []byte, perm os.FileMode, place func(tmp, path string) error) error {
	dir := filepath.Dir(path)
	// The leading dot keeps a half-written file out of globs such as
	// *.pem; CreateTemp makes it 0600, so a secret is never readable by
	// others on its way, and Chmod sets perm before any data is in it.
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	err = tmp.Chmod(perm)
	if err == nil {
		_, err = tmp.Write(data)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = place(tmp.Name(), path)
	}
	if err != nil {
		return err
	}
	return SyncDir(dir)
}

// SyncDir makes the entries of dir (a file created, renamed or removed in
// it) durable: without it a rename can be lost at a power cut even though
// the file's data was synced.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
