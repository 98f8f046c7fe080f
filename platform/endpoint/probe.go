package endpoint

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Step is one stage of reaching an endpoint, as Probe tried it.
type Step struct {
	// Name is "dns", "tcp" or "tls".
	Name string
	// Detail says what the step found (addresses, the server's
	// certificate); it holds no secret.
	Detail string
	// Err is why the step failed; nil when it passed.
	Err error
}

// ProbeOptions configure Probe.
type ProbeOptions struct {
	// TLS verifies the server (RootCAs, ServerName, NextProtos). It needs
	// no client certificate: a server that then ends the handshake, as AWS
	// endpoints that require mutual TLS do, has still shown a certificate
	// that verified, which is what the TLS step checks.
	TLS *tls.Config
	// Proxy, when set, is an HTTP proxy reached instead (the DNS and TCP
	// steps are the proxy's) and asked to CONNECT to the endpoint.
	Proxy *url.URL
	// Timeout bounds each step; default 10 s.
	Timeout time.Duration
}

// Probe reaches ep (its Port must be set) step by step — DNS, TCP, TLS —
// and stops at the first failure, so the last step says where the path
// breaks.
func Probe(ctx context.Context, ep Endpoint, o ProbeOptions) []Step {
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	dial := ep
	if o.Proxy != nil {
		port, _ := strconv.Atoi(o.Proxy.Port())
		if port == 0 {
			port = 80
		}
		dial = Endpoint{Host: o.Proxy.Hostname(), Port: port}
	}
	steps := []Step{{Name: "dns", Detail: dial.Host + " is an IP address: no lookup"}}
	addrs := []string{dial.Host}
	if net.ParseIP(dial.Host) == nil {
		steps = steps[:0]
		c, cancel := context.WithTimeout(ctx, o.Timeout)
		var err error
		addrs, err = net.DefaultResolver.LookupHost(c, dial.Host)
		cancel()
		steps = append(steps, Step{Name: "dns", Detail: fmt.Sprintf("%s resolves to %v", dial.Host, addrs), Err: err})
		if err != nil {
			steps[0].Detail = "cannot resolve " + dial.Host
			return steps
		}
	}
	c, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	conn, err := (&net.Dialer{}).DialContext(c, "tcp", net.JoinHostPort(addrs[0], strconv.Itoa(dial.Port)))
	tcp := Step{Name: "tcp", Detail: "connected to " + net.JoinHostPort(addrs[0], strconv.Itoa(dial.Port)), Err: err}
	if err != nil {
		tcp.Detail = "cannot connect to " + net.JoinHostPort(addrs[0], strconv.Itoa(dial.Port))
	}
	if o.Proxy != nil {
		tcp.Detail += " (the proxy " + o.Proxy.Redacted() + ")"
	}
	if steps = append(steps, tcp); err != nil {
		return steps
	}
	defer conn.Close()
	if d, ok := c.Deadline(); ok {
		conn.SetDeadline(d)
	}
	if o.Proxy != nil {
		if err := connect(conn, ep); err != nil {
			return append(steps, Step{Name: "tls", Detail: "the proxy did not open a tunnel to " + ep.String(), Err: err})
		}
	}
	if o.TLS == nil {
		return steps // plain TCP, e.g. a local STS over HTTP
	}
	return append(steps, handshake(c, conn, ep, o.TLS))
}

// connect asks an HTTP proxy on conn for a tunnel to ep.
func connect(conn net.Conn, ep Endpoint) error {
	req := &http.Request{Method: http.MethodConnect, URL: &url.URL{Opaque: ep.String()}, Host: ep.String(), Header: http.Header{}}
	if err := req.Write(conn); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("the proxy answered CONNECT with %s", resp.Status)
	}
	return nil
}

// handshake runs a TLS handshake on conn and reports whether the server's
// certificate verified.
func handshake(ctx context.Context, conn net.Conn, ep Endpoint, base *tls.Config) Step {
	conf := &tls.Config{MinVersion: tls.VersionTLS12}
	if base != nil {
		conf = base.Clone()
	}
	if conf.ServerName == "" {
		conf.ServerName = ep.Host
	}
	var seen string
	inner := conf.VerifyConnection
	conf.VerifyConnection = func(cs tls.ConnectionState) error {
		if inner != nil {
			if err := inner(cs); err != nil {
				return err
			}
		}
		leaf := cs.PeerCertificates[0]
		seen = fmt.Sprintf("server certificate %q verified, issued by %q, valid until %s",
			leaf.Subject.CommonName, leaf.Issuer.CommonName, leaf.NotAfter.UTC().Format(time.DateOnly))
		return nil
	}
	// No client certificate: the probe checks the server, not the device.
	conf.Certificates, conf.GetClientCertificate = nil, nil
	tc := tls.Client(conn, conf)
	err := tc.HandshakeContext(ctx)
	switch {
	case seen != "":
		return Step{Name: "tls", Detail: seen}
	case err == nil:
		return Step{Name: "tls", Detail: "handshake completed without a certificate check"}
	}
	var unknown x509.UnknownAuthorityError
	detail := "the handshake with " + ep.String() + " failed"
	if errors.As(err, &unknown) {
		detail = "the server's certificate is not signed by a trusted CA"
	}
	return Step{Name: "tls", Detail: detail, Err: err}
}
