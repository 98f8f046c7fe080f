//go:build !notpm

package tpm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// maxResponse bounds a response read from a simulator socket; TPMs answer
// with at most a few KiB (TPM_PT_MAX_RESPONSE_SIZE, 4096 on most parts).
const maxResponse = 64 << 10

// openTransport opens the TPM character device or simulator socket at path.
func openTransport(path string) (transport.TPMCloser, error) {
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s does not exist; is the TPM enabled in the firmware and its driver loaded (tpm_tis, tpm_crb)? (tether hsm list --tpm shows what it finds)", ErrNoDevice, path)
		}
		return nil, fmt.Errorf("%w: %s: %w", ErrNoDevice, path, err)
	}
	if fi.Mode()&os.ModeSocket == 0 && fi.Mode()&os.ModeCharDevice == 0 {
		return nil, fmt.Errorf("%w: %s is neither a TPM character device nor a simulator socket", ErrNoDevice, path)
	}
	if fi.Mode()&os.ModeCharDevice != 0 && strings.HasPrefix(filepath.Base(path), "tpmrm") {
		// The kernel's resource manager serves every client on its own.
		return openDevice(path)
	}
	return sharedTransport(path)
}

// A raw TPM device (/dev/tpm0) or a simulator socket serves one client at
// a time: a second open is refused (EBUSY) or waits for the first to close,
// and a new client flushes what the previous one left loaded. Within one
// process (a certificate rotation generates and proves a new key while the
// running key keeps signing) the clients of such a TPM therefore share one
// connection, one command at a time; the TPM is one per process like a
// PKCS#11 module, hence this process-wide table.
var (
	sharedMu sync.Mutex
	shared   = map[string]*sharedConn{}
)

// sharedConn is one connection to a single-client TPM and its users.
type sharedConn struct {
	path  string
	mu    sync.Mutex // one command at a time
	t     transport.TPMCloser
	users int
}

// sharedUser is one user's handle on a sharedConn; Close releases it, and
// the last one closes the connection.
type sharedUser struct {
	c      *sharedConn
	closed bool
}

func (u *sharedUser) Send(cmd []byte) ([]byte, error) {
	u.c.mu.Lock()
	defer u.c.mu.Unlock()
	rsp, err := u.c.t.Send(cmd)
	if err != nil && isConnLost(err) {
		// Users that reopen get a new connection; this one closes with
		// its last user.
		sharedMu.Lock()
		if shared[u.c.path] == u.c {
			delete(shared, u.c.path)
		}
		sharedMu.Unlock()
	}
	return rsp, err
}

func (u *sharedUser) Close() error {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if u.closed {
		return nil
	}
	u.closed = true
	u.c.users--
	if u.c.users > 0 {
		return nil
	}
	if shared[u.c.path] == u.c {
		delete(shared, u.c.path)
	}
	return u.c.t.Close()
}

// sharedTransport returns a user of the process's connection to the
// single-client TPM at path, opening it (and flushing what a dead client
// left) when there is none.
func sharedTransport(path string) (transport.TPMCloser, error) {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if c, ok := shared[path]; ok {
		c.users++
		return &sharedUser{c: c}, nil
	}
	t, err := openDevice(path)
	if err != nil {
		return nil, err
	}
	c := &sharedConn{path: path, t: t, users: 1}
	shared[path] = c
	return &sharedUser{c: c}, nil
}

// openDevice opens a new connection to the TPM at path (a character device
// or a simulator socket).
func openDevice(path string) (transport.TPMCloser, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrNoDevice, path, err)
	}
	if fi.Mode()&os.ModeSocket != 0 {
		c, err := net.Dial("unix", path)
		if err != nil {
			return nil, fmt.Errorf("%w: simulator socket %s: %w", ErrNoDevice, path, err)
		}
		t := transport.FromReadWriteCloser(&frameConn{Conn: c})
		flushTransient(t)
		return t, nil
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	switch {
	case errors.Is(err, syscall.EBUSY):
		return nil, fmt.Errorf("%w: %s is held by another program (tpm2-abrmd?); use the resource manager /dev/tpmrm0", ErrBusy, path)
	case errors.Is(err, os.ErrPermission):
		return nil, fmt.Errorf("%w: %s: permission denied; run tether in group tss (the systemd unit's TPM drop-in does) or allow the device (DeviceAllow=%s rw)", ErrNoDevice, path, path)
	case err != nil:
		return nil, fmt.Errorf("%w: %s: %w", ErrNoDevice, path, err)
	}
	// go-tpm polls an *os.File for readiness and reads each response in one
	// read, as the kernel's TPM driver returns it.
	t := transport.FromReadWriteCloser(f)
	if !strings.HasPrefix(filepath.Base(path), "tpmrm") {
		flushTransient(t)
	}
	return t, nil
}

// flushTransient flushes the transient objects and sessions a TPM without
// a resource manager still holds: a raw device (/dev/tpm0) or a simulator serves one
// client at a time, so what is loaded was left by a client that died (a
// killed agent, tpm2-tools without tpm2-abrmd) and would otherwise fill the
// TPM's few object slots. The kernel's /dev/tpmrm0 flushes a client's
// objects itself and shows no one else's.
func flushTransient(t transport.TPM) {
	// Loaded objects, then loaded sessions (HMAC and policy).
	for _, ht := range []tpm2.TPMHT{tpm2.TPMHTTransient, tpm2.TPMHTHMACSession} {
		rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapHandles, Property: uint32(ht) << 24, PropertyCount: 32}.Execute(t)
		if err != nil {
			continue
		}
		hs, err := rsp.CapabilityData.Data.Handles()
		if err != nil {
			continue
		}
		for _, h := range hs.Handle {
			if uint32(h)>>24 != uint32(ht) {
				break
			}
			_, _ = tpm2.FlushContext{FlushHandle: h}.Execute(t)
		}
	}
}

// commandTimeout bounds one command on a simulator socket, so that a
// simulator busy with another client (swtpm serves one at a time) fails the
// call instead of hanging it; RSA key generation is the slowest command.
const commandTimeout = 2 * time.Minute

// frameConn reads one whole TPM response per Read from a stream socket,
// which may deliver it in pieces; go-tpm reads a response with one Read.
type frameConn struct {
	net.Conn
}

func (c *frameConn) Write(p []byte) (int, error) {
	if err := c.Conn.SetDeadline(time.Now().Add(commandTimeout)); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

func (c *frameConn) Read(p []byte) (int, error) {
	var hdr [10]byte // tag, size, response code
	if _, err := io.ReadFull(c.Conn, hdr[:]); err != nil {
		return 0, err
	}
	size := int(binary.BigEndian.Uint32(hdr[2:6]))
	if size < len(hdr) || size > maxResponse || size > len(p) {
		return 0, fmt.Errorf("TPM response of %d bytes is malformed or too large", size)
	}
	copy(p, hdr[:])
	if _, err := io.ReadFull(c.Conn, p[len(hdr):size]); err != nil {
		return 0, err
	}
	return size, nil
}
