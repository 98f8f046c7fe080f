// Package wirecount measures what a client sends and receives over TCP, for
// `make bench`'s bytes-on-the-wire figures: a proxy on 127.0.0.1 that
// forwards to a server and counts, per connection, the payload bytes each
// way and, from the kernel's TCP_INFO, the segments (pure ACKs and keepalive
// probes included), from which the bytes at the IP layer follow.
package wirecount

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// HeaderBytes is what IPv4 and TCP with the timestamp option add to each
// segment (20 + 32). Link-layer framing is not counted: it depends on the
// link (Ethernet, PPP, a cellular modem's own).
const HeaderBytes = 52

// Traffic is one proxied connection's traffic, from the client's side.
type Traffic struct {
	Sent, Received  int64 // payload bytes
	SegsOut, SegsIn int64 // segments the client sent and received
	Opened, Closed  time.Time
}

// IPBytes is the traffic at the IP layer both ways: payload plus a header
// per segment.
func (t Traffic) IPBytes() int64 { return t.Sent + t.Received + HeaderBytes*(t.SegsOut+t.SegsIn) }

// conn is one proxied connection.
type conn struct {
	mu       sync.Mutex
	t        Traffic
	open     bool
	client   *net.TCPConn
	upstream net.Conn
}

// Proxy forwards connections on Addr to a server and counts them.
type Proxy struct {
	// Addr is the proxy's host:port on 127.0.0.1.
	Addr string

	ln    net.Listener
	to    string
	mu    sync.Mutex
	conns []*conn
	wg    sync.WaitGroup
}

// New starts a proxy to the server at to.
func New(to string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{Addr: ln.Addr().String(), ln: ln, to: to}
	p.wg.Go(p.accept)
	return p, nil
}

func (p *Proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.to)
		if err != nil {
			c.Close()
			continue
		}
		cn := &conn{t: Traffic{Opened: time.Now()}, open: true, client: c.(*net.TCPConn), upstream: up}
		p.mu.Lock()
		p.conns = append(p.conns, cn)
		p.mu.Unlock()
		p.wg.Go(func() { p.relay(cn) })
	}
}

// counter counts what passes through it into *n.
type counter struct {
	w  io.Writer
	mu *sync.Mutex
	n  *int64
}

func (c counter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.mu.Lock()
	*c.n += int64(n)
	c.mu.Unlock()
	return n, err
}

func (p *Proxy) relay(c *conn) {
	done := make(chan struct{}, 2)
	go func() {
		io.Copy(counter{c.upstream, &c.mu, &c.t.Sent}, c.client)
		c.upstream.(*net.TCPConn).CloseWrite()
		done <- struct{}{}
	}()
	go func() {
		io.Copy(counter{c.client, &c.mu, &c.t.Received}, c.upstream)
		c.client.CloseWrite()
		done <- struct{}{}
	}()
	<-done
	<-done
	c.snapshot()
	c.mu.Lock()
	c.open, c.t.Closed = false, time.Now()
	c.mu.Unlock()
	c.client.Close()
	c.upstream.Close()
}

// snapshot reads the client socket's segment counts.
func (c *conn) snapshot() {
	rc, err := c.client.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		if info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
			c.mu.Lock()
			// The proxy's socket: what it received, the client sent.
			c.t.SegsOut, c.t.SegsIn = int64(info.Segs_in), int64(info.Segs_out)
			c.mu.Unlock()
		}
	})
}

// Conns returns a copy of every connection's figures so far, oldest first;
// open connections are read live.
func (p *Proxy) Conns() []Traffic {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Traffic, 0, len(p.conns))
	for _, c := range p.conns {
		c.mu.Lock()
		open := c.open
		c.mu.Unlock()
		if open {
			c.snapshot()
		}
		c.mu.Lock()
		out = append(out, c.t)
		c.mu.Unlock()
	}
	return out
}

// Drop closes every open connection, as a network that lost them would.
func (p *Proxy) Drop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.client.Close()
		c.upstream.Close()
	}
}

// Close stops the proxy and its connections.
func (p *Proxy) Close() error {
	err := p.ln.Close()
	p.Drop()
	p.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
