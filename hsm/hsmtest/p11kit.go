package hsmtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/tetherd/tether/hsm/p11rpc"
)

// RemoteURI is URI with x-p11-kit=remote: the module is hosted by a child
// `p11-kit remote` process of the key's own, even in cgo builds.
func (tk *Token) RemoteURI(object string) string { return tk.URI(object) + "&x-p11-kit=remote" }

// ServerURI is the object's URI through a `p11-kit server` serving this
// token's module; the first call starts the server (foreground, its own
// socket in a temporary folder), which stops when the test ends.
func (tk *Token) ServerURI(t testing.TB, object string) string {
	t.Helper()
	if tk.server == "" {
		tk.server = startServer(t, tk.Module)
	}
	return "pkcs11:token=" + url.PathEscape(tk.Label) + ";object=" + url.PathEscape(object) +
		"?x-p11-kit=" + tk.server + "&pin-source=file:" + tk.PINFile
}

// P11KitServer returns the socket of the token's p11-kit server, or "".
func (tk *Token) P11KitServer() string { return tk.server }

func startServer(t testing.TB, module string) string {
	t.Helper()
	if _, err := exec.LookPath("p11-kit"); err != nil {
		t.Fatal("hsmtest: p11-kit missing: install the Debian package p11-kit")
	}
	sock := filepath.Join(t.TempDir(), "p11kit.sock")
	cmd := exec.Command("p11-kit", "server", "-f", "-n", sock, "--provider", module, "pkcs11:")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("hsmtest: p11-kit server: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	for i := 0; ; i++ {
		// The socket file appears before the server listens on it.
		if conn, err := net.Dial("unix", sock); err == nil {
			conn.Close()
			return sock
		}
		if i == 1000 {
			t.Fatalf("hsmtest: p11-kit server did not create %s: %s", sock, out.String())
		}
		// Polling another process's start-up: there is no clock to fake.
		time.Sleep(5 * time.Millisecond)
	}
}

// rpcSession runs f with a R/W user session on the token, through a
// `p11-kit remote` of its own.
func (tk *Token) rpcSession(f func(*p11rpc.Client, p11rpc.SessionHandle) error) error {
	c, err := p11rpc.DialRemote(context.Background(), "", tk.Module, nil)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Initialize(); err != nil {
		return err
	}
	defer c.Finalize()
	slots, err := c.GetSlotList(true)
	if err != nil {
		return err
	}
	for _, s := range slots {
		if ti, err := c.GetTokenInfo(s); err == nil && ti.Label == tk.Label {
			sh, err := c.OpenSession(s, p11rpc.CKF_RW_SESSION)
			if err != nil {
				return err
			}
			defer c.CloseSession(sh)
			return f(c, sh)
		}
	}
	return fmt.Errorf("token %q not found", tk.Label)
}

// rpcInitToken is initToken through `p11-kit remote`.
func rpcInitToken(tk *Token, soPIN, pin string) error {
	c, err := p11rpc.DialRemote(context.Background(), "", tk.Module, nil)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Initialize(); err != nil {
		return err
	}
	defer c.Finalize()
	slots, err := c.GetSlotList(true)
	if err != nil {
		return err
	}
	free := -1
	for _, s := range slots {
		if ti, err := c.GetTokenInfo(s); err == nil && ti.Flags&p11rpc.CKF_TOKEN_INITIALIZED == 0 {
			free = int(s)
			break
		}
	}
	if free < 0 {
		return errors.New("no free SoftHSM slot")
	}
	if err := c.InitToken(uint(free), soPIN, tk.Label); err != nil {
		return fmt.Errorf("C_InitToken: %w", err)
	}
	slots, err = c.GetSlotList(true)
	if err != nil {
		return err
	}
	for _, s := range slots {
		ti, err := c.GetTokenInfo(s)
		if err != nil || ti.Label != tk.Label {
			continue
		}
		sh, err := c.OpenSession(s, p11rpc.CKF_RW_SESSION)
		if err != nil {
			return err
		}
		defer c.CloseSession(sh)
		if err := c.Login(sh, p11rpc.CKU_SO, soPIN); err != nil {
			return fmt.Errorf("SO login: %w", err)
		}
		if err := c.InitPIN(sh, pin); err != nil {
			return fmt.Errorf("C_InitPIN: %w", err)
		}
		return c.Logout(sh)
	}
	return errors.New("initialised token not found")
}
