package mqtt

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
)

// Message is a publication received from the broker.
type Message struct {
	Topic      string     `json:"topic"`
	Payload    []byte     `json:"payload"` // base64 in JSON
	QoS        byte       `json:"qos"`
	Retain     bool       `json:"retain,omitempty"`
	Properties Properties `json:"properties"`
}

// Properties are the MQTT v5 publish properties a consumer may need.
type Properties struct {
	ContentType     string         `json:"content_type,omitempty"`
	ResponseTopic   string         `json:"response_topic,omitempty"`
	CorrelationData []byte         `json:"correlation_data,omitempty"`
	MessageExpiry   *uint32        `json:"message_expiry,omitempty"`
	PayloadFormat   *byte          `json:"payload_format,omitempty"`
	User            []UserProperty `json:"user,omitempty"`
}

// UserProperty is one MQTT v5 user property (keys may repeat).
type UserProperty struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// Subscription is one local consumer of a topic filter. Messages arrive on
// C. A consumer that falls more than Config.SubscriberBuffer messages behind
// loses the newest ones (counted by Dropped) rather than stalling the
// session, which would stop every other consumer and the broker's
// acknowledgements. C is closed by Close and when the session closes.
type Subscription struct {
	// C delivers the messages.
	C <-chan Message

	filter  string
	c       chan Message
	s       *Session
	dropped atomic.Uint64
	once    sync.Once
	mu      sync.Mutex // orders sends against close
	ended   bool
}

// Filter returns the topic filter.
func (sub *Subscription) Filter() string { return sub.filter }

// Dropped counts messages lost because C was full.
func (sub *Subscription) Dropped() uint64 { return sub.dropped.Load() }

// Close ends the subscription; the broker subscription is removed when the
// last local subscriber of the filter leaves.
func (sub *Subscription) Close() {
	s := sub.s
	s.mu.Lock()
	m := s.subs[sub.filter]
	_, mine := m[sub]
	delete(m, sub)
	last := mine && len(m) == 0
	if last {
		delete(s.subs, sub.filter)
	}
	s.mu.Unlock()
	sub.end()
	if last {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ConnectTimeout)
			defer cancel()
			// If the connection is down the broker-side subscription lingers
			// until the session expires; messages for it are discarded here.
			_, _ = s.cm.Unsubscribe(ctx, &paho.Unsubscribe{Topics: []string{sub.filter}})
		}()
	}
}

func (sub *Subscription) end() {
	sub.once.Do(func() {
		sub.mu.Lock()
		sub.ended = true
		close(sub.c)
		sub.mu.Unlock()
	})
}

func (sub *Subscription) deliver(m Message) bool {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	if sub.ended {
		return true
	}
	select {
	case sub.c <- m:
		return true
	default:
		sub.dropped.Add(1)
		return false
	}
}

// Subscribe adds a local consumer for filter (QoS 1 at the broker). When
// the session is connected it returns once the broker granted the
// subscription; when not, at once: subscriptions are (re)made on every
// connection. Errors: a *RuleError for a bad filter, or the broker's refusal.
func (s *Session) Subscribe(ctx context.Context, filter string) (*Subscription, error) {
	if err := ValidateFilter(filter); err != nil {
		return nil, err
	}
	c := make(chan Message, s.cfg.SubscriberBuffer)
	sub := &Subscription{C: c, c: c, filter: filter, s: s}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, errors.New("mqtt: session closed")
	}
	m := s.subs[filter]
	first := m == nil
	if first {
		m = make(map[*Subscription]struct{})
		s.subs[filter] = m
	}
	m[sub] = struct{}{}
	connected := s.state == StateConnected
	s.mu.Unlock()
	if first && connected {
		if err := s.subscribeBroker(ctx, s.cm, filter); err != nil {
			if errors.Is(err, errRefused) {
				sub.Close()
				return nil, err
			}
			// Connection trouble: the subscription is made on reconnect.
			s.setErr(err)
		}
	}
	return sub, nil
}

var errRefused = errors.New("subscription refused")

// subscribeBroker subscribes each filter in its own SUBSCRIBE packet, so
// that each carries its MQTT v5 subscription identifier: a broker that sends
// one copy per matching subscription (mosquitto does) tags each copy, and
// route gives it only to the consumers of that filter.
func (s *Session) subscribeBroker(ctx context.Context, cm *autopaho.ConnectionManager, filters ...string) error {
	for _, f := range filters {
		s.mu.Lock()
		id, ok := s.subIDs[f]
		if !ok {
			s.nextSubID++
			id = s.nextSubID
			s.subIDs[f] = id
		}
		s.mu.Unlock()
		sa, err := cm.Subscribe(ctx, &paho.Subscribe{
			Subscriptions: []paho.SubscribeOptions{{Topic: f, QoS: 1}},
			Properties:    &paho.SubscribeProperties{SubscriptionIdentifier: &id},
		})
		if sa != nil && len(sa.Reasons) > 0 && sa.Reasons[0] >= 0x80 {
			return fmt.Errorf("mqtt: %w: broker refused filter %q (reason 0x%02x): check the device policy allows iot:Subscribe on it", errRefused, f, sa.Reasons[0])
		}
		if err != nil {
			return fmt.Errorf("mqtt: subscribe %q at %s: %w", f, s.endpoint, err)
		}
	}
	return nil
}

// route fans a received publication out to the matching local subscribers.
// It runs on paho's receive path, so it never blocks.
func (s *Session) route(pr paho.PublishReceived) (bool, error) {
	p := pr.Packet
	msg := Message{Topic: p.Topic, Payload: p.Payload, QoS: p.QoS, Retain: p.Retain}
	if pp := p.Properties; pp != nil {
		msg.Properties = Properties{
			ContentType:     pp.ContentType,
			ResponseTopic:   pp.ResponseTopic,
			CorrelationData: pp.CorrelationData,
			MessageExpiry:   pp.MessageExpiry,
			PayloadFormat:   pp.PayloadFormat,
		}
		for _, u := range pp.User {
			msg.Properties.User = append(msg.Properties.User, UserProperty{Key: u.Key, Value: u.Value})
		}
	}
	var subID *int
	if p.Properties != nil {
		subID = p.Properties.SubscriptionIdentifier
	}
	var targets []*Subscription
	s.mu.Lock()
	for f, m := range s.subs {
		if subID != nil && s.subIDs[f] != *subID {
			continue
		}
		if Match(f, p.Topic) {
			for sub := range m {
				targets = append(targets, sub)
			}
		}
	}
	s.mu.Unlock()
	var lost uint64
	for _, sub := range targets {
		if !sub.deliver(msg) {
			lost++
		}
	}
	if lost > 0 {
		s.mu.Lock()
		s.dropped += lost
		s.mu.Unlock()
	}
	return true, nil
}
