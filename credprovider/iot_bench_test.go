package credprovider_test

import (
	"crypto/tls"
	"testing"
	"time"

	"github.com/tetherd/tether/credprovider"
	"github.com/tetherd/tether/credprovider/iotcredtest"
)

// BenchmarkFetch measures a credentials fetch against a raw mutual-TLS
// handshake to the same simulator, interleaved in the same run, and reports
// fetch/handshake. "fresh-connection" pays a handshake per fetch (the ratio
// is the HTTP and JSON overhead on top of it); "keep-alive" reuses the
// provider's connection as a refresh burst would.
func BenchmarkFetch(b *testing.B) {
	s, err := iotcredtest.NewServer(iotcredtest.WithRoleAlias("gw-role", time.Hour))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	dev, err := s.PKI.NewDevice("gw-0001", iotcredtest.ECDSAP256)
	if err != nil {
		b.Fatal(err)
	}
	cert := dev.TLSCertificate()
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: s.Pool(), ServerName: "127.0.0.1", Certificates: []tls.Certificate{cert}}

	for _, mode := range []struct {
		name  string
		fresh bool
	}{{"fresh-connection", true}, {"keep-alive", false}} {
		b.Run(mode.name, func(b *testing.B) {
			p, err := credprovider.NewIoT(credprovider.IoTOptions{
				Endpoint: s.Endpoint, RoleAlias: "gw-role", ThingName: "gw-0001",
				Certificate: cert, RootCAs: s.Pool(),
			})
			if err != nil {
				b.Fatal(err)
			}
			defer p.CloseIdleConnections()
			var handshake, fetch time.Duration
			n := 0
			for b.Loop() {
				start := time.Now()
				conn, err := tls.Dial("tcp", s.Endpoint, tlsConf)
				if err != nil {
					b.Fatal(err)
				}
				if err := conn.Handshake(); err != nil {
					b.Fatal(err)
				}
				handshake += time.Since(start)
				_ = conn.Close()

				if mode.fresh {
					p.CloseIdleConnections()
				}
				start = time.Now()
				if _, err := p.Retrieve(b.Context()); err != nil {
					b.Fatal(err)
				}
				fetch += time.Since(start)
				n++
			}
			b.ReportMetric(float64(fetch.Nanoseconds())/float64(n), "ns/fetch")
			b.ReportMetric(float64(handshake.Nanoseconds())/float64(n), "ns/handshake")
			b.ReportMetric(float64(fetch)/float64(handshake), "fetch/handshake")
		})
	}
}
