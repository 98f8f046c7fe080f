package agent

import (
	"errors"
	"net"
	"sync"
	"time"
)

// sharedListener keeps one listening socket open across configuration
// reloads: each generation of servers gets a child listener, and closing a
// child (which http.Server.Shutdown does) leaves the socket itself open.
type sharedListener struct {
	ln    net.Listener
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	err   error
}

func newSharedListener(ln net.Listener) *sharedListener {
	s := &sharedListener{ln: ln, conns: make(chan net.Conn), done: make(chan struct{})}
	go s.accept()
	return s
}

func (s *sharedListener) accept() {
	var delay time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				s.err = err
				s.Close()
				return
			}
			// Out of file descriptors and the like: back off as net/http
			// does, rather than let a flood of local connections end the
			// agent.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			select {
			case <-time.After(delay):
			case <-s.done:
				return
			}
			continue
		}
		delay = 0
		select {
		case s.conns <- c:
		case <-s.done:
			c.Close()
			return
		}
	}
}

// Close closes the socket itself.
func (s *sharedListener) Close() error {
	s.once.Do(func() {
		close(s.done)
		s.ln.Close()
	})
	return nil
}

// child returns a listener for one generation of servers.
func (s *sharedListener) child() net.Listener {
	return &childListener{s: s, closed: make(chan struct{})}
}

type childListener struct {
	s      *sharedListener
	closed chan struct{}
	once   sync.Once
}

func (c *childListener) Accept() (net.Conn, error) {
	select {
	case conn := <-c.s.conns:
		return conn, nil
	case <-c.closed:
		return nil, net.ErrClosed
	case <-c.s.done:
		if c.s.err != nil {
			return nil, c.s.err
		}
		return nil, net.ErrClosed
	}
}

func (c *childListener) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

func (c *childListener) Addr() net.Addr { return c.s.ln.Addr() }
