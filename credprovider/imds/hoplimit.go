package imds

import (
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// HopLimitListener returns ln with its IP TTL (IPv6: unicast hop limit)
// set to hops, as EC2 answers IMDSv2 with a hop limit of 1: the answers
// cannot cross a router, so a container behind a bridge with routing or a
// host forwarding packets never receives them. Each accepted connection
// gets the limit, or is closed when it cannot. The listening socket gets it
// too where the kernel allows (Linux does; some sandboxes refuse IP_TTL on
// a listener), so that the handshake's SYN-ACK carries it as well.
func HopLimitListener(ln net.Listener, hops int) (net.Listener, error) {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return nil, fmt.Errorf("imds: hop limit: %T is not a TCP listener", ln)
	}
	_ = setHopLimit(tl, tl.Addr(), hops)
	return &hopLimitListener{Listener: ln, hops: hops}, nil
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
	return setHopLimit(tc, tc.LocalAddr(), hops)
}

func setHopLimit(s syscall.Conn, local net.Addr, hops int) error {
	raw, err := s.SyscallConn()
	if err != nil {
		return fmt.Errorf("imds: hop limit: %w", err)
	}
	v4 := false
	if a, ok := local.(*net.TCPAddr); ok && a.IP.To4() != nil {
		v4 = true
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		if v4 {
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
