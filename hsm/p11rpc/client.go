package p11rpc

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// MaxMessage bounds every message either way (header excluded). Nothing
// tether asks for comes near it; a larger frame means a broken peer.
const MaxMessage = 1 << 20

// DefaultCallTimeout bounds one request and its response. Key generation
// on slow tokens is the longest call tether makes.
const DefaultCallTimeout = 2 * time.Minute

// maxVersion is the highest protocol version this client speaks.
const maxVersion = 2

// handshake is what C_Initialize carries to identify the protocol.
const handshake = "PRIVATE-GNOME-KEYRING-PKCS11-PROTOCOL-V-1"

// ErrTransport marks a failure of the connection itself (the peer exited,
// the socket closed, a malformed or oversized message, a timeout). The
// Client is unusable afterwards; dial again.
var ErrTransport = errors.New("p11-kit RPC connection failed")

// deadliner is implemented by net.Conn and by *os.File pipes.
type deadliner interface {
	SetDeadline(time.Time) error
}

// Client is one connection to a PKCS#11 module served over p11-kit's RPC
// protocol. It is safe for concurrent use; calls are serialised.
type Client struct {
	// CallTimeout bounds each call; zero means DefaultCallTimeout. Set it
	// before the first call.
	CallTimeout time.Duration

	peer    string // for errors: "p11-kit remote /usr/lib/..." or the socket
	r       io.Reader
	w       io.Writer
	dl      []deadliner
	closers []io.Closer
	wait    func() error // reaps a child process; nil for sockets
	stderr  *tailBuffer

	mu      sync.Mutex
	seq     uint32
	version byte
	broken  error
	closed  bool
}

// DialRemote starts `p11kit remote module` (p11kit is the p11-kit program,
// found in $PATH when empty) and speaks the protocol over its standard input
// and output. env, when not nil, is the child's environment. The module is
// not initialised yet: call Initialize.
func DialRemote(ctx context.Context, p11kit, module string, env []string) (*Client, error) {
	if p11kit == "" {
		p, err := exec.LookPath("p11-kit")
		if err != nil {
			return nil, fmt.Errorf("p11-kit not found in $PATH: install p11-kit (Debian: apt-get install p11-kit): %w", err)
		}
		p11kit = p
	}
	// Pipes made here (not cmd.StdinPipe) are pollable *os.File values,
	// so call deadlines apply to them.
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, err
	}
	cmd := exec.Command(p11kit, "remote", module)
	cmd.Env = env
	// Its own process group: a Ctrl-C meant for the program does not end
	// the module under it. It still ends with us: EOF on its input.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stdin, cmd.Stdout = inR, outW
	tail := &tailBuffer{max: 4096}
	cmd.Stderr = tail
	if err := cmd.Start(); err != nil {
		inR.Close()
		inW.Close()
		outR.Close()
		outW.Close()
		return nil, fmt.Errorf("start %s remote %s: %w", p11kit, module, err)
	}
	inR.Close()
	outW.Close()
	c := &Client{
		peer: "p11-kit remote " + module, r: outR, w: inW,
		dl: []deadliner{outR, inW}, closers: []io.Closer{inW, outR},
		stderr: tail,
	}
	c.wait = func() error {
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			return err
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			return <-done
		}
	}
	if err := c.negotiate(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// DialServer connects to a `p11-kit server` Unix socket at path. The module
// is not initialised yet: call Initialize.
func DialServer(ctx context.Context, path string) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("p11-kit server %s: %w; is `p11-kit server` running with that socket name?", path, err)
	}
	c := newConnClient("p11-kit server "+path, conn)
	if err := c.negotiate(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// NewClient speaks the protocol over conn, which must already be connected
// to a p11-kit RPC server; it negotiates the protocol version first.
func NewClient(ctx context.Context, name string, conn net.Conn) (*Client, error) {
	c := newConnClient(name, conn)
	if err := c.negotiate(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func newConnClient(name string, conn net.Conn) *Client {
	return &Client{peer: name, r: conn, w: conn, dl: []deadliner{conn}, closers: []io.Closer{conn}}
}

// Peer names what the client is connected to, for messages.
func (c *Client) Peer() string { return c.peer }

// Version is the negotiated protocol version.
func (c *Client) Version() byte { return c.version }

func (c *Client) timeout() time.Duration {
	if c.CallTimeout > 0 {
		return c.CallTimeout
	}
	return DefaultCallTimeout
}

func (c *Client) setDeadline(t time.Time) {
	for _, d := range c.dl {
		_ = d.SetDeadline(t)
	}
}

// negotiate sends the highest version this client speaks and takes the
// server's answer (p11-kit servers answer with the lower of both).
func (c *Client) negotiate(ctx context.Context) error {
	deadline := time.Now().Add(c.timeout())
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	c.setDeadline(deadline)
	defer c.setDeadline(time.Time{})
	if _, err := c.w.Write([]byte{maxVersion}); err != nil {
		return c.transportErr("send protocol version", err)
	}
	var v [1]byte
	if _, err := io.ReadFull(c.r, v[:]); err != nil {
		return c.transportErr("read protocol version", err)
	}
	if v[0] > maxVersion {
		return fmt.Errorf("%w: %s: answered protocol version %d, this client speaks 0 to %d", ErrTransport, c.peer, v[0], maxVersion)
	}
	c.version = v[0]
	return nil
}

// transportErr describes a connection failure, with what the child printed.
func (c *Client) transportErr(what string, err error) error {
	msg := fmt.Sprintf("%s: %s", c.peer, what)
	if c.wait != nil && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, os.ErrClosed) || isBrokenPipe(err)) {
		for _, cl := range c.closers {
			cl.Close()
		}
		werr := c.wait()
		c.wait = nil
		if werr != nil {
			msg += fmt.Sprintf(" (p11-kit exited: %v", werr)
		} else {
			msg += " (p11-kit exited"
		}
		if s := strings.TrimSpace(c.stderr.String()); s != "" {
			msg += ": " + s
		}
		msg += ")"
	}
	// The cause goes last, so that errors.Is sees it.
	return fmt.Errorf("%w: %s: %w", ErrTransport, msg, err)
}

func isBrokenPipe(err error) bool {
	return err != nil && strings.Contains(err.Error(), "broken pipe")
}

// do sends one request and returns the response body checked against c.
func (c *Client) do(cl call, build func(*encoder)) (*decoder, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, fmt.Errorf("%w: %s: client closed", ErrTransport, c.peer)
	}
	if c.broken != nil {
		return nil, c.broken
	}
	e := newEncoder(cl, c.version)
	if build != nil {
		build(e)
	}
	body, err := e.finish()
	if err != nil {
		return nil, err
	}
	if len(body) > MaxMessage {
		return nil, fmt.Errorf("p11rpc: %s request of %d bytes exceeds the %d-byte limit", cl.name, len(body), MaxMessage)
	}
	resp, err := c.roundTrip(cl, body)
	if err != nil {
		c.broken = err
		return nil, err
	}
	d, err := newDecoder(cl, resp)
	if d != nil {
		d.c = c
	}
	if err != nil {
		var rv Error
		if !errors.As(err, &rv) {
			err = fmt.Errorf("%w: %s: %w", ErrTransport, c.peer, err)
			c.broken = err
		}
		return nil, err
	}
	return d, nil
}

func (c *Client) roundTrip(cl call, body []byte) ([]byte, error) {
	c.seq++
	c.setDeadline(time.Now().Add(c.timeout()))
	defer c.setDeadline(time.Time{})
	hdr := make([]byte, 12, 12+len(body))
	binary.BigEndian.PutUint32(hdr[0:], c.seq)
	binary.BigEndian.PutUint32(hdr[4:], 0) // no options
	binary.BigEndian.PutUint32(hdr[8:], uint32(len(body)))
	if _, err := c.w.Write(append(hdr, body...)); err != nil {
		return nil, c.transportErr(cl.name+": send", err)
	}
	if _, err := io.ReadFull(c.r, hdr[:12]); err != nil {
		return nil, c.transportErr(cl.name+": read response", err)
	}
	code := binary.BigEndian.Uint32(hdr[0:])
	olen := binary.BigEndian.Uint32(hdr[4:])
	blen := binary.BigEndian.Uint32(hdr[8:])
	if code != c.seq {
		return nil, fmt.Errorf("%w: %s: %s: response for request %d, want %d", ErrTransport, c.peer, cl.name, code, c.seq)
	}
	if olen > MaxMessage || blen > MaxMessage {
		return nil, fmt.Errorf("%w: %s: %s: response of %d+%d bytes exceeds the %d-byte limit", ErrTransport, c.peer, cl.name, olen, blen, MaxMessage)
	}
	buf := make([]byte, int(olen)+int(blen))
	if _, err := io.ReadFull(c.r, buf); err != nil {
		return nil, c.transportErr(cl.name+": read response", err)
	}
	return buf[olen:], nil
}

// markBroken records a protocol failure found while reading a response.
func (c *Client) markBroken(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken == nil {
		c.broken = err
	}
}

// finish completes a call whose response has no payload to read beyond d.
func finish(d *decoder, err error) error {
	if err != nil {
		return err
	}
	return d.done()
}

// Close ends the connection: a child `p11-kit remote` sees end of input and
// exits (it finalises the module). Close does not call C_Finalize; call
// Finalize first for an orderly shutdown.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	for _, cl := range c.closers {
		cl.Close()
	}
	if c.wait != nil {
		_ = c.wait() // its exit status after our EOF says nothing useful
		c.wait = nil
	}
	return nil
}

// tailBuffer keeps the last max bytes written to it (a child's stderr).
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   bytes.Buffer
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b.Write(p)
	if over := t.b.Len() - t.max; over > 0 {
		t.b.Next(over)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	if t == nil {
		return ""
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.b.String()
}
