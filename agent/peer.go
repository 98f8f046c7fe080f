package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/tetherd/tether/platform"
)

// Peer is the process on the other end of a Unix socket connection, as the
// kernel reports it (SO_PEERCRED): it cannot be forged by the client.
type Peer struct {
	PID int32
	UID uint32
	GID uint32
	// Groups are the peer's supplementary groups, read from /proc at connect
	// time; empty when /proc is not readable.
	Groups []uint32
	// Unit is the systemd unit the peer runs in, read from its cgroup at
	// connect time (Unix socket peers); "" when it runs in none or /proc
	// does not say.
	Unit string
	// CgroupID is the cgroup v2 id of a TCP peer's socket, from sock_diag;
	// its unit is looked up only when a [[workload]] needs it (see
	// peerUnit).
	CgroupID uint64
}

type peerKey struct{}

// ucredOf reads SO_PEERCRED from a Unix socket connection: the peer's pid,
// uid and gid, without its supplementary groups.
func ucredOf(c net.Conn) (*Peer, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nil, errors.New("not a Unix socket connection")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	if serr != nil {
		return nil, fmt.Errorf("SO_PEERCRED: %w", serr)
	}
	return &Peer{PID: cred.Pid, UID: cred.Uid, GID: cred.Gid}, nil
}

// peerFromConn reads SO_PEERCRED and the peer's supplementary groups, and
// with units its systemd unit (a read of /proc/PID/cgroup, only worth it
// when a [[workload]] names units).
func peerFromConn(c net.Conn, units bool) (*Peer, error) {
	var p *Peer
	if lc, ok := c.(*limitedConn); ok {
		if lc.peer == nil {
			return nil, lc.peerErr
		}
		cp := *lc.peer
		p = &cp
	} else {
		var err error
		if p, err = ucredOf(c); err != nil {
			return nil, err
		}
	}
	if p.PID > 0 {
		var cg string
		err := errors.ErrUnsupported
		if units {
			cg, err = platform.ProcessCgroup(int(p.PID))
		}
		var same bool
		// Read after the cgroup: a pid reused in between has other ids.
		p.Groups, same = procGroups(p.PID, p.UID, p.GID)
		if err == nil && same {
			p.Unit = platform.UnitOfCgroup(cg)
		}
	}
	return p, nil
}

// procGroups reads the supplementary groups of pid, so allow_gids can name
// a group the client is a member of and not only its primary group. The
// process must still have the uid and gid the kernel recorded for the
// connection; otherwise (it exited and the pid was reused) no groups count,
// and same is false.
func procGroups(pid int32, uid, gid uint32) (groups []uint32, same bool) {
	f, err := os.Open("/proc/" + strconv.Itoa(int(pid)) + "/status")
	if err != nil {
		return nil, false
	}
	defer f.Close()
	var gs []uint32
	sameUID, sameGID := false, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, rest, _ := strings.Cut(sc.Text(), ":")
		fields := strings.Fields(rest)
		switch key {
		case "Uid":
			sameUID = len(fields) > 0 && fields[0] == strconv.FormatUint(uint64(uid), 10)
		case "Gid":
			sameGID = len(fields) > 0 && fields[0] == strconv.FormatUint(uint64(gid), 10)
		case "Groups":
			for _, f := range fields {
				if g, err := strconv.ParseUint(f, 10, 32); err == nil {
					gs = append(gs, uint32(g))
				}
			}
		}
	}
	if !sameUID || !sameGID {
		return nil, false
	}
	return gs, true
}

// connContext stores the peer of each accepted Unix connection in the
// request context; http.Server calls it once per connection.
func connContext(ctx context.Context, c net.Conn) context.Context {
	return peerContext(ctx, c, false)
}

// onHostKey is the request context's key for whether a TCP peer is on this
// host (localPeer), decided once per connection.
type onHostKey struct{}

// tcpConnContext is connContext for the TCP endpoints; it also records
// whether the peer is on this host, so no request parses its address again.
func tcpConnContext(ctx context.Context, c net.Conn) context.Context {
	local, ok1 := c.LocalAddr().(*net.TCPAddr)
	remote, ok2 := c.RemoteAddr().(*net.TCPAddr)
	ctx = context.WithValue(ctx, onHostKey{}, ok1 && ok2 && localPeer(local, remote))
	return connContext(ctx, c)
}

// connContext is the Unix socket's: it reads the peer's unit too while the
// current generation has [[workload]]s that name units.
func (d *daemon) connContext(ctx context.Context, c net.Conn) context.Context {
	a := d.cur.Load()
	return peerContext(ctx, c, a != nil && a.workloads.wantsUnits())
}

func peerContext(ctx context.Context, c net.Conn, units bool) context.Context {
	p, err := peerFromConn(c, units)
	if err != nil {
		return ctx
	}
	return context.WithValue(ctx, peerKey{}, p)
}

// peerFrom returns the peer stored by connContext, or nil.
func peerFrom(ctx context.Context) *Peer {
	p, _ := ctx.Value(peerKey{}).(*Peer)
	return p
}

// AllowList is a set of uids and gids. An empty list allows every peer that
// the socket's file permissions let in.
type AllowList struct {
	UIDs []int
	GIDs []int
}

// Empty reports whether the list places no restriction.
func (l AllowList) Empty() bool { return len(l.UIDs) == 0 && len(l.GIDs) == 0 }

// Allows reports whether p's uid, primary gid or a supplementary group is listed.
func (l AllowList) Allows(p *Peer) bool {
	if l.Empty() {
		return true
	}
	if p == nil {
		return false
	}
	if slices.Contains(l.UIDs, int(p.UID)) || slices.Contains(l.GIDs, int(p.GID)) {
		return true
	}
	for _, g := range p.Groups {
		if slices.Contains(l.GIDs, int(g)) {
			return true
		}
	}
	return false
}
