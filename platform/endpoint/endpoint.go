// Package endpoint holds the one grammar of the network endpoints tether is
// configured with: the AWS endpoints it connects to ("host" or
// "host:port", never a URL) and the loopback address it listens on for
// containers. credprovider and mqtt parse their endpoints with it, and so
// does `tether config check`.
package endpoint

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// Endpoint is a host and an optional port.
type Endpoint struct {
	// Host is a DNS name or an IP address (without brackets).
	Host string
	// Port is 1 to 65535, or 0 when the text gave none.
	Port int
}

// String formats e as "host" or "host:port" (brackets around IPv6).
func (e Endpoint) String() string {
	if e.Port == 0 {
		return e.Host
	}
	return net.JoinHostPort(e.Host, strconv.Itoa(e.Port))
}

// Parse parses "host" or "host:port": a DNS name (letters, digits and
// hyphens in dot-separated labels) or an IP address, and a port from 1 to
// 65535. A scheme or a path is refused, since the caller chooses the
// protocol.
func Parse(s string) (Endpoint, error) {
	if strings.Contains(s, "/") {
		return Endpoint{}, fmt.Errorf("%q must be a host or host:port, without a scheme or path", s)
	}
	e := Endpoint{Host: s}
	if h, p, err := net.SplitHostPort(s); err == nil {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return Endpoint{}, fmt.Errorf("%q has an invalid port; use a number from 1 to 65535", s)
		}
		e = Endpoint{Host: h, Port: n}
	}
	if e.Host == "" {
		return Endpoint{}, fmt.Errorf("%q has no host", s)
	}
	if net.ParseIP(e.Host) == nil && !validHostname(e.Host) {
		return Endpoint{}, fmt.Errorf("%q is not a valid host name", e.Host)
	}
	return e, nil
}

// ParseLoopback parses an address to listen on that never reaches beyond
// this device: a loopback IP address with a port, like 127.0.0.1:2020.
func ParseLoopback(s string) (Endpoint, error) {
	e, err := Parse(s)
	if err != nil {
		return Endpoint{}, err
	}
	if ip := net.ParseIP(e.Host); ip == nil || !ip.IsLoopback() || e.Port == 0 {
		return Endpoint{}, fmt.Errorf("%q must be a loopback address with a port, like 127.0.0.1:2020 (it is never exposed beyond this device)", s)
	}
	return e, nil
}

// ParseLocal parses an address to listen on that only this host reaches: a
// loopback IP address with a port, or an address assigned to this host's
// loopback interface, like 169.254.169.254:80 once
// `ip addr add 169.254.169.254/32 dev lo` has put it there. Whether an
// address is on the loopback interface is read from this host, now.
func ParseLocal(s string) (Endpoint, error) {
	e, err := Parse(s)
	if err != nil {
		return Endpoint{}, err
	}
	ip := net.ParseIP(e.Host)
	if ip != nil && e.Port != 0 && !ip.IsLoopback() {
		on, err := OnLoopbackInterface(ip)
		if err != nil {
			return Endpoint{}, fmt.Errorf("%q: %w", s, err)
		}
		if on {
			return e, nil
		}
	}
	if ip == nil || e.Port == 0 || !ip.IsLoopback() {
		return Endpoint{}, fmt.Errorf("%q must be a loopback address with a port, like 127.0.0.1:1338, or an address on the loopback interface (ip addr add 169.254.169.254/32 dev lo)", s)
	}
	return e, nil
}

// OnLoopbackInterface reports whether ip is assigned to one of this host's
// loopback interfaces.
func OnLoopbackInterface(ip net.IP) (bool, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return false, fmt.Errorf("cannot list this host's interfaces (a service needs AF_NETLINK in RestrictAddressFamilies): %w", err)
	}
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagLoopback == 0 {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			return false, fmt.Errorf("cannot list the addresses of %s: %w", ifc.Name, err)
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
				return true, nil
			}
		}
	}
	return false, nil
}

func validHostname(h string) bool {
	if len(h) > 253 {
		return false
	}
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, r := range label {
			if !(r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
				return false
			}
		}
	}
	return true
}
