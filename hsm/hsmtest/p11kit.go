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
		tk.server = StartP11KitServer(t, tk.Module)
	}
	return "pkcs11:token=" + url.PathEscape(tk.Label) + ";object=" + url.PathEscape(object) +
		"?x-p11-kit=" + tk.server + "&pin-source=file:" + tk.PINFile
}

// P11KitServer returns the socket of the token's p11-kit server, or "".
func (tk *Token) P11KitServer() string { return tk.server }

// StartP11KitServer starts `p11-kit server` in the foreground for module,
// serving all its tokens on a socket in a temporary folder, and returns the
// socket once the server accepts connections. The server stops when the
// test ends.
func StartP11KitServer(t testing.TB, module string) string {
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

// withRemote runs f with the token's module initialised in a `p11-kit
// remote` of its own.
func (tk *Token) withRemote(f func(*p11rpc.Client) error) error {
	c, err := p11rpc.DialRemote(context.Background(), "", tk.Module, nil)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Initialize(); err != nil {
		return err
	}
	defer c.Finalize()
	return f(c)
}

// slotOf finds the slot of the initialised token labelled label; free
// finds an uninitialised one instead.
func slotOf(c *p11rpc.Client, label string, free bool) (uint, error) {
	slots, err := c.GetSlotList(true)
	if err != nil {
		return 0, err
	}
	for _, s := range slots {
		ti, err := c.GetTokenInfo(s)
		if err != nil {
			continue
		}
		if free && ti.Flags&p11rpc.CKF_TOKEN_INITIALIZED == 0 || !free && ti.Label == label {
			return s, nil
		}
	}
	if free {
		return 0, errors.New("no free SoftHSM slot")
	}
	return 0, fmt.Errorf("token %q not found", label)
}

// rpcSession runs f with a R/W session on the token, through a `p11-kit
// remote` of its own.
func (tk *Token) rpcSession(f func(*p11rpc.Client, p11rpc.SessionHandle) error) error {
	return tk.withRemote(func(c *p11rpc.Client) error {
		return tk.rpcSessionOn(c, func(sh p11rpc.SessionHandle) error { return f(c, sh) })
	})
}

// rpcInitToken is initToken through `p11-kit remote`.
func rpcInitToken(tk *Token, soPIN, pin string) error {
	return tk.withRemote(func(c *p11rpc.Client) error {
		free, err := slotOf(c, "", true)
		if err != nil {
			return err
		}
		if err := c.InitToken(free, soPIN, tk.Label); err != nil {
			return fmt.Errorf("C_InitToken: %w", err)
		}
		return tk.rpcSessionOn(c, func(sh p11rpc.SessionHandle) error {
			if err := c.Login(sh, p11rpc.CKU_SO, soPIN); err != nil {
				return fmt.Errorf("SO login: %w", err)
			}
			if err := c.InitPIN(sh, pin); err != nil {
				return fmt.Errorf("C_InitPIN: %w", err)
			}
			return c.Logout(sh)
		})
	})
}

// rpcSessionOn runs f with a R/W session on the token over c. SoftHSM
// moves a new token to a slot of its own, so the slot is looked up again.
func (tk *Token) rpcSessionOn(c *p11rpc.Client, f func(p11rpc.SessionHandle) error) error {
	s, err := slotOf(c, tk.Label, false)
	if err != nil {
		return err
	}
	sh, err := c.OpenSession(s, p11rpc.CKF_RW_SESSION)
	if err != nil {
		return err
	}
	defer c.CloseSession(sh)
	return f(sh)
}
