package wirecount_test

import (
	"context"
	"crypto/tls"
	"net"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/tetherd/tether/credprovider"
	"github.com/tetherd/tether/credprovider/iotcredtest"
	"github.com/tetherd/tether/mqtt"
	"github.com/tetherd/tether/mqtt/mqtttest"
	"github.com/tetherd/tether/softhsm-test/wirecount"
	"github.com/tetherd/tether/store"
)

// Defaults the per-day figure is computed for.
const (
	lifetime  = time.Hour // a role alias's default credentialDurationSeconds
	keepAlive = mqtt.DefaultKeepAlive
	// measureKeepAlive is the keep-alive one is measured at.
	measureKeepAlive = 5 * time.Second
)

// refreshesPerDay is how often the Refresher refreshes credentials of the
// default lifetime: at the advisory point (15 minutes before expiry), moved
// earlier by the jitter's mean (5% of the 45 minutes before it).
func refreshesPerDay() float64 {
	period := (lifetime - credprovider.DefaultAdvisoryWindow).Seconds() * (1 - credprovider.DefaultJitter/2)
	return 86400 / period
}

// BenchmarkWire: bytes on the wire, on loopback through a counting proxy,
// with the IoT credentials simulator and mosquitto (mTLS, MQTT v5): a
// credentials refresh on a new connection with a full TLS handshake and
// with a resumed session, against the bare mutual-TLS handshake to the same
// server (the baseline); an MQTT keep-alive; a reconnect; and the total for
// an idle day at the defaults (1-hour credentials, mqtt.DefaultKeepAlive).
// IP-layer bytes: payload plus 52 bytes of IPv4 and TCP headers per segment.
func BenchmarkWire(b *testing.B) {
	sim, err := iotcredtest.NewServer(iotcredtest.WithRoleAlias("gw-role", lifetime))
	if err != nil {
		b.Fatal(err)
	}
	defer sim.Close()
	dev, err := sim.PKI.NewDevice("gw-0001", iotcredtest.ECDSAP256)
	if err != nil {
		b.Fatal(err)
	}
	credProxy, err := wirecount.New(sim.Endpoint)
	if err != nil {
		b.Fatal(err)
	}
	defer credProxy.Close()

	broker := mqtttest.NewBroker(b, mqtttest.Options{})
	mqttProxy, err := wirecount.New(broker.Addr)
	if err != nil {
		b.Fatal(err)
	}
	defer mqttProxy.Close()

	for b.Loop() {
		// The baseline: one bare mutual-TLS handshake, then close.
		last := func(p *wirecount.Proxy) wirecount.Traffic {
			time.Sleep(50 * time.Millisecond) // let the proxy see the close
			cs := p.Conns()
			return cs[len(cs)-1]
		}
		conn, err := tls.Dial("tcp", credProxy.Addr, &tls.Config{RootCAs: sim.Pool(), ServerName: "127.0.0.1",
			Certificates: []tls.Certificate{dev.TLSCertificate()}, MinVersion: tls.VersionTLS12})
		if err != nil {
			b.Fatal(err)
		}
		conn.Close()
		handshake := last(credProxy)

		p, err := credprovider.NewIoT(credprovider.IoTOptions{Endpoint: credProxy.Addr, RoleAlias: "gw-role", ThingName: "gw-0001",
			Certificate: dev.TLSCertificate(), RootCAs: sim.Pool()})
		if err != nil {
			b.Fatal(err)
		}
		refresh := func() wirecount.Traffic {
			if _, err := p.Retrieve(context.Background()); err != nil {
				b.Fatal(err)
			}
			// The provider closes its idle connection after 10 s; all
			// of it, FIN exchange included, is the refresh's.
			time.Sleep(12 * time.Second)
			return last(credProxy)
		}
		full, resumed := refresh(), refresh()
		b.ReportMetric(float64(handshake.IPBytes()), "handshake-B")
		b.ReportMetric(float64(full.IPBytes()), "refresh-full-B")
		b.ReportMetric(float64(resumed.IPBytes()), "refresh-resumed-B")
		b.ReportMetric(float64(full.IPBytes())/float64(handshake.IPBytes()), "refresh-full/handshake")
		b.ReportMetric(float64(resumed.IPBytes())/float64(handshake.IPBytes()), "refresh-resumed/handshake")

		// MQTT: connect, idle for two keep-alive periods (at the shortest
		// keep-alive: the bytes of one do not depend on the interval, since
		// no TCP keepalive probes are sent), reconnect.
		db, err := store.Open(filepath.Join(b.TempDir(), "state.db"), store.Options{})
		if err != nil {
			b.Fatal(err)
		}
		ob, err := db.Outbox(store.OutboxOptions{})
		if err != nil {
			b.Fatal(err)
		}
		cert := mqtttest.Device(b, broker.PKI, "gw-0001").TLSCertificate()
		host, port, _ := net.SplitHostPort(mqttProxy.Addr)
		portN, _ := strconv.Atoi(port)
		s, err := mqtt.New(context.Background(), mqtt.Config{Endpoint: host, Port: portN, ServerName: "127.0.0.1", ThingName: "gw-0001",
			Certificate: &cert, RootCAs: broker.PKI.Pool(), Outbox: ob, KeepAlive: measureKeepAlive,
			MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
		if err != nil {
			b.Fatal(err)
		}
		await := func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := s.AwaitConnection(ctx); err != nil {
				b.Fatal(err)
			}
			time.Sleep(200 * time.Millisecond) // CONNACK and what follows it
		}
		await()
		cs := mqttProxy.Conns()
		connect := cs[len(cs)-1]
		const periods = 2
		time.Sleep(periods*measureKeepAlive + measureKeepAlive/2)
		cs = mqttProxy.Conns()
		idle := cs[len(cs)-1]
		perKeepAlive := float64(idle.IPBytes()-connect.IPBytes()) / periods
		mqttProxy.Drop()
		await()
		cs = mqttProxy.Conns()
		reconnect := cs[len(cs)-1]
		s.Close()
		ob.Close()
		db.Close()
		b.ReportMetric(float64(connect.IPBytes()), "mqtt-connect-B")
		b.ReportMetric(perKeepAlive, "mqtt-keepalive-B")
		b.ReportMetric(float64(reconnect.IPBytes()), "mqtt-reconnect-B")
		b.ReportMetric(float64(reconnect.IPBytes())/float64(handshake.IPBytes()), "mqtt-reconnect/handshake")

		day := refreshesPerDay()*float64(resumed.IPBytes()) + 86400/keepAlive.Seconds()*perKeepAlive
		b.ReportMetric(refreshesPerDay(), "refreshes/day")
		b.ReportMetric(day/1024, "idle-day-KiB")
	}
}
