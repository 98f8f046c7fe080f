package agent

import (
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Limits of the local endpoints against a local user who opens connections
// without end (10,000 keep-alive connections took an unbounded agent from
// 17 MB to 207 MB and, at the descriptor limit, made every other client time
// out). Each endpoint holds at most maxConns connections, and at most
// maxConnsPerUID from one uid, as the kernel reports it (SO_PEERCRED, or
// sock_diag for the container endpoint): a connection over either limit is
// closed at once, so one user cannot starve the others. Connections are cheap
// to hold (a goroutine and two 4 KiB buffers), so the bound on memory is a
// few MiB; `make bench` measures it.
const (
	maxConns       = 512
	maxConnsPerUID = 32
	// idleTimeout ends kept-alive connections between requests; SDKs
	// reconnect transparently, and an idle connection costs the agent
	// memory that a local user could multiply.
	idleTimeout = 15 * time.Second
	// bodyTimeout bounds the time to send a request body (a publish).
	bodyTimeout = 10 * time.Second
)

// unknownUID counts the connections whose owner could not be read.
const unknownUID = ^uint32(0)

// limitListener enforces maxConns and maxConnsPerUID on the connections
// it accepts; peer tells their owner.
type limitListener struct {
	net.Listener
	peer func(net.Conn) (*Peer, error)
	log  *slog.Logger // rate-limited
	// overLimit counts the connections closed over a limit; nil: not counted.
	overLimit *atomic.Uint64
	total     int
	perUID    map[uint32]int
	mu        sync.Mutex
	maxAll    int
	maxEach   int
}

func newLimitListener(ln net.Listener, peer func(net.Conn) (*Peer, error), log *slog.Logger) *limitListener {
	all, each := connLimits()
	return &limitListener{Listener: ln, peer: peer, log: log, perUID: map[uint32]int{}, maxAll: all, maxEach: each}
}

// fdReserve is what the agent keeps of its descriptors for everything but
// local clients (the state file, netlink and TLS sockets, MQTT, logs), or a
// quarter of them when there are few.
const fdReserve = 32

// connLimits scales maxConns and maxConnsPerUID down to the descriptors
// the process may open: each endpoint gets at most half of what the reserve
// leaves, and one uid a quarter of that. Otherwise, under a low
// RLIMIT_NOFILE, one user holding connections below its own limit could
// still use every descriptor, and the connections of others would wait
// behind its queued ones without end.
func connLimits() (all, each int) {
	all, each = maxConns, maxConnsPerUID
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err == nil && rl.Cur < uint64(2*maxConns+fdReserve) {
		n := int(rl.Cur)
		all = max(4, (n-min(fdReserve, n/4))/2)
		each = min(each, max(2, all/4))
	}
	return all, each
}

// Accept returns the next connection within the limits, closing those over
// them.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		p, perr := l.peer(c)
		uid := unknownUID
		if perr == nil {
			uid = p.UID
		}
		l.mu.Lock()
		// Root is held to its own limit only, so that an operator can still
		// run `tether status` while other users fill the endpoint.
		over := (uid != 0 && l.total >= l.maxAll) || l.perUID[uid] >= l.maxEach
		if !over {
			l.total++
			l.perUID[uid]++
		}
		n := l.perUID[uid]
		l.mu.Unlock()
		if over {
			if l.overLimit != nil {
				l.overLimit.Add(1)
			}
			c.Close()
			who := "unknown"
			if uid != unknownUID {
				who = strconv.FormatUint(uint64(uid), 10)
			}
			l.log.Warn("refused a connection over the limit", "uid", who, "uid_connections", n,
				"limit_per_uid", l.maxEach, "limit", l.maxAll, "listener", l.Addr().String())
			continue
		}
		return &limitedConn{Conn: c, l: l, uid: uid, peer: p, peerErr: perr}, nil
	}
}

func (l *limitListener) release(uid uint32) {
	l.mu.Lock()
	l.total--
	if l.perUID[uid]--; l.perUID[uid] <= 0 {
		delete(l.perUID, uid)
	}
	l.mu.Unlock()
}

// limitedConn is a connection counted by its limitListener until closed.
type limitedConn struct {
	net.Conn
	l       *limitListener
	uid     uint32
	peer    *Peer
	peerErr error
	once    sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.uid) })
	return err
}

// bodyDeadline gives a request that carries a body bodyTimeout to send it,
// so a client cannot hold a connection by sending its body slowly.
func bodyDeadline(next http.Handler) http.Handler {
	return bodyDeadlineAfter(bodyTimeout, next)
}

// bodyDeadlineAfter is bodyDeadline with d for bodyTimeout. A request
// without a body (Content-Length 0 and no Transfer-Encoding: net/http says
// ContentLength -1 for a chunked one) sets no deadline: it has nothing left
// to read, ReadHeaderTimeout bounded its headers and IdleTimeout bounds
// the wait for the next request, so skipping it weakens no limit.
func bodyDeadlineAfter(d time.Duration, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength != 0 {
			_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(d))
		}
		next.ServeHTTP(w, r)
	})
}
