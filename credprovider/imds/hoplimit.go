package imds

import (
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// HopLimitListener returns ln with every accepted TCP connection's IP TTL
// (IPv6: unicast hop limit) set to hops, as EC2 answers IMDSv2 with a hop
// limit of 1: the answers cannot cross a router, so a container behind a
// bridge with routing or a host forwarding packets never receives them. A
// connection whose limit cannot be set is closed.
func HopLimitListener(ln net.Listener, hops int) net.Listener {
	return &hopLimitListener{Listener: ln, hops: hops}
}

type hopLimitListener struct {
	net.Listener
	hops int
}

func (l *hopLimitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if err := SetHopLimit(c, l.hops); err != nil {
			c.Close()
			continue
		}
		return c, nil
	}
}

// SetHopLimit sets the IP TTL (IPv4) or unicast hop limit (IPv6) of the
// packets c sends.
func SetHopLimit(c net.Conn, hops int) error {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return fmt.Errorf("imds: hop limit: %T is not a TCP connection", c)
	}
	local, _ := tc.LocalAddr().(*net.TCPAddr)
	raw, err := tc.SyscallConn()
	if err != nil {
		return fmt.Errorf("imds: hop limit: %w", err)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		if local != nil && local.IP.To4() != nil {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TTL, hops)
		} else {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, hops)
		}
	}); err != nil {
		return fmt.Errorf("imds: hop limit: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("imds: hop limit: %w", serr)
	}
	return nil
}
