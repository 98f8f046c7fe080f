package mqtt

import (
	"context"
	"crypto/tls"
	"errors"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/tetherd/tether/mqtt/mqtttest"
)

// brokerClient is one MQTT v5 connection to a real mosquitto, shared by the
// inputs of a fuzz worker; it reconnects when the broker drops it.
type brokerClient struct {
	mu  sync.Mutex
	cm  *autopaho.ConnectionManager
	cfg autopaho.ClientConfig
}

func newBrokerClient(f *testing.F, b *mqtttest.Broker) *brokerClient {
	cert := mqtttest.Device(f, b.PKI, "fuzz").TLSCertificate()
	u, _ := url.Parse("mqtts://" + b.Addr)
	bc := &brokerClient{cfg: autopaho.ClientConfig{
		ServerUrls:       []*url.URL{u},
		TlsCfg:           &tls.Config{RootCAs: b.PKI.Pool(), Certificates: []tls.Certificate{cert}, ServerName: "127.0.0.1"},
		KeepAlive:        30,
		ConnectTimeout:   5 * time.Second,
		ClientConfig:     paho.ClientConfig{ClientID: "fuzz"},
		ReconnectBackoff: func(int) time.Duration { return 10 * time.Millisecond },
	}}
	cm, err := autopaho.NewConnection(context.Background(), bc.cfg)
	if err != nil {
		f.Fatal(err)
	}
	bc.cm = cm
	f.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		cm.Disconnect(ctx)
	})
	return bc
}

// do runs op on a live connection, waiting for one.
func (bc *brokerClient) do(t *testing.T, op func(context.Context, *autopaho.ConnectionManager) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := bc.cm.AwaitConnection(ctx); err != nil {
		t.Fatalf("no connection to mosquitto: %v", err)
	}
	return op(ctx, bc.cm)
}

// FuzzTopicAgainstMosquitto ensures that every topic and payload that
// ValidatePublish accepts is accepted by a real MQTT v5 broker: a PUBACK
// without error, and the connection kept. (A topic it refuses may still be
// one a broker takes: AWS IoT Core's limits are stricter than MQTT's.)
func FuzzTopicAgainstMosquitto(f *testing.F) {
	for _, s := range []string{"dt/gw-0001/temp", "a//b", "/", "$aws/things/gw/shadow/update", "é/€/😀", "a\x01b", "a\nb", "a\uffff", "a\u0085", "a/+/b", "x\u00a0y", "\U0001fffe"} {
		f.Add(s, []byte("payload"))
	}
	b := mqtttest.NewBroker(f, mqtttest.Options{})
	bc := newBrokerClient(f, b)
	f.Fuzz(func(t *testing.T, topic string, payload []byte) {
		if ValidatePublish(topic, payload, 1) != nil {
			return
		}
		err := bc.do(t, func(ctx context.Context, cm *autopaho.ConnectionManager) error {
			r, err := cm.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: payload})
			if err != nil {
				return err
			}
			if r.ReasonCode >= 0x80 {
				return errors.New("PUBACK reason " + r.Properties.ReasonString)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("topic %q passes validation but mosquitto refused it: %v", topic, err)
		}
	})
}

// FuzzFilterAgainstMosquitto ensures that every filter ValidateFilter
// accepts is granted by a real MQTT v5 broker.
func FuzzFilterAgainstMosquitto(f *testing.F) {
	for _, s := range []string{"dt/+/temp", "#", "+", "a/#", "+/+/#", "$aws/things/+/shadow/#", "a/#/b", "a+", "a\x01", "\uffff/#"} {
		f.Add(s)
	}
	b := mqtttest.NewBroker(f, mqtttest.Options{})
	bc := newBrokerClient(f, b)
	f.Fuzz(func(t *testing.T, filter string) {
		if ValidateFilter(filter) != nil {
			return
		}
		err := bc.do(t, func(ctx context.Context, cm *autopaho.ConnectionManager) error {
			s, err := cm.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}})
			if err != nil {
				return err
			}
			if len(s.Reasons) != 1 || s.Reasons[0] >= 0x80 {
				return errors.New("SUBACK refused")
			}
			_, err = cm.Unsubscribe(ctx, &paho.Unsubscribe{Topics: []string{filter}})
			return err
		})
		if err != nil {
			t.Fatalf("filter %q passes validation but mosquitto refused it: %v", filter, err)
		}
	})
}
