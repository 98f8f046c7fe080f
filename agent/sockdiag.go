package agent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os/user"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// The container endpoint is TCP on loopback, so SO_PEERCRED does not apply;
// but the client's end of the connection is a socket on this host, and the
// kernel records which uid created it. The sock_diag netlink interface
// (inet_diag, what `ss -e` prints as uid:) looks a socket up by its address
// tuple and answers that uid. x/sys/unix has the netlink constants but not
// the inet_diag structures, so they are laid out here (linux/inet_diag.h).

// errPeerUnknown means the owner of a TCP peer could not be determined; the
// endpoint then treats the peer as outside every allow list.
var errPeerUnknown = errors.New("owner of the TCP peer unknown")

// tcpPeer returns the local owner of the other end of a loopback TCP
// connection: its uid from sock_diag, its primary gid and groups from the
// user database (a TCP peer has no process credentials to read them from).
func tcpPeer(c net.Conn) (*Peer, error) {
	local, ok1 := c.LocalAddr().(*net.TCPAddr)
	remote, ok2 := c.RemoteAddr().(*net.TCPAddr)
	if !ok1 || !ok2 {
		return nil, fmt.Errorf("%w: not a TCP connection", errPeerUnknown)
	}
	if !localPeer(local, remote) {
		return nil, fmt.Errorf("%w: %s is not on this host", errPeerUnknown, remote)
	}
	// The peer's socket has the tuple reversed: its source is our remote.
	uid, cgroup, err := socketOwner(remote, local)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errPeerUnknown, err)
	}
	p := &Peer{UID: uid, GID: unknownUID, CgroupID: cgroup}
	if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil {
		if g, err := strconv.ParseUint(u.Gid, 10, 32); err == nil {
			p.GID = uint32(g)
		}
		if ids, err := u.GroupIds(); err == nil {
			for _, id := range ids {
				if g, err := strconv.ParseUint(id, 10, 32); err == nil {
					p.Groups = append(p.Groups, uint32(g))
				}
			}
		}
	}
	return p, nil
}

// localPeer reports whether a TCP connection between local and remote came
// from this host: from a loopback address, or from the very address it
// reached, which is one of this host's (the kernel drops packets from the
// network that claim a local source address).
func localPeer(local, remote *net.TCPAddr) bool {
	return remote.IP.IsLoopback() || remote.IP.Equal(local.IP)
}

// sockDiagUsable reports why sock_diag cannot be asked, if it cannot: a
// service whose RestrictAddressFamilies= leaves out AF_NETLINK.
func sockDiagUsable() error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return fmt.Errorf("sock_diag: %w", err)
	}
	return unix.Close(fd)
}

// inet_diag layout.
const (
	sizeofNlMsghdr      = 16
	sizeofInetDiagReqV2 = 56
	sizeofInetDiagMsg   = 72
	inetDiagNoCookie    = ^uint32(0)
	tcpEstablished      = 1
	// inetDiagCgroupID is the attribute holding the socket's cgroup v2 id
	// (Linux 5.7 and later), which x/sys/unix does not name.
	inetDiagCgroupID = 21
)

// socketOwner asks sock_diag for the uid owning the TCP socket whose source
// is src and destination dst, and the id of the cgroup v2 its creator was in
// (0 when the kernel does not say).
func socketOwner(src, dst *net.TCPAddr) (uid uint32, cgroup uint64, err error) {
	family, s4, d4 := unix.AF_INET6, src.IP.To16(), dst.IP.To16()
	if a, b := src.IP.To4(), dst.IP.To4(); a != nil && b != nil {
		family, s4, d4 = unix.AF_INET, a, b
	}
	req := make([]byte, sizeofNlMsghdr+sizeofInetDiagReqV2)
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST)
	ne.PutUint32(req[8:], 1) // sequence
	r := req[sizeofNlMsghdr:]
	r[0] = byte(family)
	r[1] = unix.IPPROTO_TCP
	ne.PutUint32(r[4:], 1<<tcpEstablished|1<<2|1<<3) // ESTABLISHED, SYN_SENT, SYN_RECV
	id := r[8:]
	binary.BigEndian.PutUint16(id[0:], uint16(src.Port))
	binary.BigEndian.PutUint16(id[2:], uint16(dst.Port))
	copy(id[4:20], s4)
	copy(id[20:36], d4)
	ne.PutUint32(id[40:], inetDiagNoCookie)
	ne.PutUint32(id[44:], inetDiagNoCookie)

	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return 0, 0, fmt.Errorf("sock_diag: %w", err)
	}
	defer unix.Close(fd)
	// A reply that never comes must not hold a request up.
	tv := unix.Timeval{Sec: 1}
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, 0, fmt.Errorf("sock_diag: send: %w", err)
	}
	buf := make([]byte, 4096)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return 0, 0, fmt.Errorf("sock_diag: receive: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return 0, 0, fmt.Errorf("sock_diag: %w", err)
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if errno := int32(ne.Uint32(m.Data)); errno != 0 {
						return 0, 0, fmt.Errorf("sock_diag: %w", syscall.Errno(-errno))
					}
				}
				return 0, 0, errors.New("sock_diag: no answer")
			case unix.NLMSG_DONE:
				return 0, 0, errors.New("sock_diag: no such socket")
			case unix.SOCK_DIAG_BY_FAMILY:
				if len(m.Data) < sizeofInetDiagMsg {
					return 0, 0, errors.New("sock_diag: short answer")
				}
				return ne.Uint32(m.Data[64:]), diagCgroup(m.Data[sizeofInetDiagMsg:]), nil
			}
		}
	}
}

// diagCgroup finds INET_DIAG_CGROUP_ID among the attributes that follow an
// inet_diag_msg.
func diagCgroup(attrs []byte) uint64 {
	ne := binary.NativeEndian
	for len(attrs) >= 4 {
		n, typ := int(ne.Uint16(attrs)), ne.Uint16(attrs[2:])
		if n < 4 || n > len(attrs) {
			return 0
		}
		if typ == inetDiagCgroupID && n >= 12 {
			return ne.Uint64(attrs[4:])
		}
		attrs = attrs[min(len(attrs), (n+3)&^3):]
	}
	return 0
}
