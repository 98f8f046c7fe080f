package mqtt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/autopaho/queue"
	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session/state"

	"github.com/tetherd/tether/store"
)

// delivery connects the durable outbox to paho. It is two things at once:
//
//   - autopaho's queue.Queue: autopaho's publish loop Peeks the next message
//     after the delivery cursor, hands it to paho (which assigns a packet id
//     and writes it) and calls Remove, which advances the cursor;
//   - the client side of paho's session store: Put records which outbox
//     message a packet id carries, Delete (called when the PUBACK arrives)
//     acknowledges it in the outbox, which deletes it.
//
// The outbox is the only durable copy. The session store keeps in-flight
// packets in memory so that paho resends them with DUP after a reconnect to
// a session the broker kept; when the broker has no session for us (or after
// an agent restart) paho calls Reset and the cursor is rewound to the start,
// so every unacknowledged message is sent again, in order.
type delivery struct {
	ob *store.Outbox
	s  *Session

	mu     sync.Mutex
	cursor uint64               // highest sequence handed to paho on this session
	peeked *store.OutboxMessage // between Peek and Remove/Leave
	putSeq uint64               // the peeked message was Put into the session
	wake   chan struct{}        // closed when there may be something after cursor
	ids    map[uint16]uint64    // packet id → outbox sequence
	enq    map[uint16]time.Time // packet id → when its message was enqueued (publish latency)
	pkts   map[uint16][]byte    // packet id → serialised packet, for resends
	order  []uint16             // packet ids in Put order
	// ready is the message Wait found after cursor readyAfter, so that the
	// Peek that follows (autopaho calls both for every message) does not
	// look it up again.
	ready      *store.OutboxMessage
	readyAfter uint64
	// What tells a poisonous message from a flaky network: when the
	// connection came up and the last message was handed to the broker,
	// and how often each message was the oldest in flight when the broker
	// closed the connection right after (see lost).
	upAt, putAt time.Time
	strikes     map[uint64]int
}

// A message the broker closes the connection on this many times in a row,
// each time within strikeWindow of its sending, is moved to the dead
// letters so the messages behind it are delivered. A broker refusing one
// packet (mosquitto's "malformed packet") drops the connection at once; a
// network failure rarely strikes the same message three times running
// without an acknowledgement in between.
const (
	maxStrikes   = 3
	strikeWindow = 5 * time.Second
)

func newDelivery(ob *store.Outbox, s *Session) *delivery {
	return &delivery{
		ob:      ob,
		s:       s,
		wake:    make(chan struct{}),
		ids:     make(map[uint16]uint64),
		enq:     make(map[uint16]time.Time),
		pkts:    make(map[uint16][]byte),
		strikes: make(map[uint64]int),
	}
}

// relay turns outbox commits into wake-ups until ctx ends; one goroutine
// per session rather than one per Wait call.
func (d *delivery) relay(ctx context.Context) {
	for {
		n := d.ob.Notify()
		select {
		case <-n:
			d.wakeUp()
		case <-ctx.Done():
			return
		}
	}
}

func (d *delivery) wakeUp() {
	d.mu.Lock()
	close(d.wake)
	d.wake = make(chan struct{})
	d.mu.Unlock()
}

// Wait implements queue.Queue.
func (d *delivery) Wait() chan struct{} {
	d.mu.Lock()
	w, cursor := d.wake, d.cursor
	d.mu.Unlock()
	if m, ok, err := d.ob.Next(cursor); ok || err != nil {
		if ok {
			d.mu.Lock()
			if d.cursor == cursor {
				d.ready, d.readyAfter = &m, cursor
			}
			d.mu.Unlock()
		}
		// On an error let Peek report it (autopaho logs and retries).
		c := make(chan struct{})
		close(c)
		return c
	}
	return w
}

// Enqueue implements queue.Queue. Session.Publish writes to the outbox
// directly, so autopaho never calls this.
func (d *delivery) Enqueue(io.Reader) error {
	return errors.New("mqtt: publish through Session.Publish, not the autopaho queue")
}

// Peek implements queue.Queue.
func (d *delivery) Peek() (queue.Entry, error) {
	d.mu.Lock()
	cursor, ready := d.cursor, d.ready
	fresh := ready != nil && d.readyAfter == cursor
	d.ready = nil
	d.mu.Unlock()
	var m store.OutboxMessage
	if fresh {
		m = *ready
	} else {
		var ok bool
		var err error
		if m, ok, err = d.ob.Next(cursor); err != nil {
			return nil, err
		} else if !ok {
			return nil, queue.ErrEmpty
		}
	}
	var buf bytes.Buffer
	p := &paho.Publish{Topic: m.Topic, QoS: m.QoS, Payload: m.Payload}
	if _, err := p.Packet().WriteTo(&buf); err != nil {
		return nil, fmt.Errorf("encode outbox message %d: %w", m.Seq, err)
	}
	d.mu.Lock()
	d.peeked, d.putSeq = &m, 0
	d.mu.Unlock()
	return &entry{d: d, m: m, b: buf.Bytes()}, nil
}

type entry struct {
	d *delivery
	m store.OutboxMessage
	b []byte
}

func (e *entry) Reader() (io.Reader, error) { return bytes.NewReader(e.b), nil }

func (e *entry) Leave() error {
	e.d.mu.Lock()
	e.d.peeked = nil
	e.d.mu.Unlock()
	return nil
}

// Remove is called once paho has the message: written for QoS 0, in the
// session (written or to be resent) for QoS 1, or refused as invalid.
func (e *entry) Remove() error {
	d := e.d
	d.mu.Lock()
	put := d.putSeq == e.m.Seq
	d.peeked = nil
	if e.m.Seq > d.cursor {
		d.cursor = e.m.Seq
	}
	d.mu.Unlock()
	switch {
	case e.m.QoS == 0:
		d.ob.Ack(e.m.Seq)
		d.s.observeLatency(e.m.Enqueued, time.Now())
	case !put:
		// paho refused it before it reached the session (e.g. the broker's
		// maximum QoS is 0): retrying cannot help, so set it aside loudly.
		d.s.deadLetter(e.m.Seq, e.m.Topic, "refused by the MQTT client before sending")
	}
	return nil
}

// Quarantine sets aside a message paho could not parse; ours always parse.
func (e *entry) Quarantine() error {
	e.d.mu.Lock()
	e.d.peeked = nil
	if e.m.Seq > e.d.cursor {
		e.d.cursor = e.m.Seq
	}
	e.d.mu.Unlock()
	e.d.s.deadLetter(e.m.Seq, e.m.Topic, "unreadable queue entry")
	return nil
}

// clientStore is the paho session store for packet ids we allocate.
type clientStore struct{ d *delivery }

func (c clientStore) Put(id uint16, typ byte, w io.WriterTo) error {
	var buf bytes.Buffer
	if _, err := w.WriteTo(&buf); err != nil {
		return err
	}
	d := c.d
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.pkts[id]; !ok {
		d.order = append(d.order, id)
	}
	d.pkts[id] = buf.Bytes()
	if typ == packets.PUBLISH && d.peeked != nil {
		d.ids[id] = d.peeked.Seq
		d.enq[id] = d.peeked.Enqueued
		d.putSeq = d.peeked.Seq
		d.putAt = time.Now()
	}
	return nil
}

func (c clientStore) Get(id uint16) (io.ReadCloser, error) {
	c.d.mu.Lock()
	defer c.d.mu.Unlock()
	b, ok := c.d.pkts[id]
	if !ok {
		return nil, fmt.Errorf("packet id %d not in session", id)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

// Delete is called when the broker has acknowledged packet id.
func (c clientStore) Delete(id uint16) error {
	d := c.d
	d.mu.Lock()
	seq, ok := d.ids[id]
	enq := d.enq[id]
	d.forget(id)
	delete(d.strikes, seq)
	d.mu.Unlock()
	if ok {
		d.ob.Ack(seq)
		d.s.observeLatency(enq, time.Now())
	}
	return nil
}

func (c clientStore) Quarantine(id uint16) error {
	d := c.d
	d.mu.Lock()
	d.forget(id)
	// The message is still in the outbox: send it again from the start.
	d.cursor, d.ready = 0, nil
	d.mu.Unlock()
	d.wakeUp()
	return nil
}

func (c clientStore) List() ([]uint16, error) {
	c.d.mu.Lock()
	defer c.d.mu.Unlock()
	return slices.Clone(c.d.order), nil
}

// Reset is called when the broker has no session for us: nothing in flight
// will be acknowledged, so rewind and resend everything unacknowledged.
func (c clientStore) Reset() error {
	d := c.d
	d.mu.Lock()
	d.ids = make(map[uint16]uint64)
	d.enq = make(map[uint16]time.Time)
	d.pkts = make(map[uint16][]byte)
	d.order = nil
	d.cursor, d.ready = 0, nil
	d.mu.Unlock()
	d.wakeUp()
	return nil
}

// forget drops id from the session; d.mu must be held.
func (d *delivery) forget(id uint16) {
	delete(d.ids, id)
	delete(d.enq, id)
	delete(d.pkts, id)
	if i := slices.Index(d.order, id); i >= 0 {
		d.order = slices.Delete(d.order, i, i+1)
	}
}

// seqOf returns the outbox sequence packet id carries.
func (d *delivery) seqOf(id uint16) (uint64, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	seq, ok := d.ids[id]
	return seq, ok
}

// lost is told that the connection ended, with the broker's DISCONNECT if
// it sent one. It strikes the oldest message in flight when the end came
// within strikeWindow of the connection coming up or of the last send, and
// reports it (packet id, sequence, why) once it has maxStrikes.
func (d *delivery) lost(dp *packets.Disconnect, now time.Time) (id uint16, seq uint64, why string, dead bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	last := d.putAt
	if d.upAt.After(last) {
		last = d.upAt
	}
	if now.Sub(last) > strikeWindow {
		return 0, 0, "", false
	}
	for _, pid := range d.order {
		if s, ok := d.ids[pid]; ok {
			id, seq = pid, s
			break
		}
	}
	if seq == 0 {
		return 0, 0, "", false
	}
	d.strikes[seq]++
	if d.strikes[seq] < maxStrikes {
		return 0, 0, "", false
	}
	delete(d.strikes, seq)
	why = fmt.Sprintf("the broker closed the connection each of %d times right after it was sent", maxStrikes)
	if dp != nil {
		why += fmt.Sprintf(" (DISCONNECT reason 0x%02x %s)", dp.ReasonCode, disconnectReason(dp))
	}
	return id, seq, why, true
}

func disconnectReason(dp *packets.Disconnect) string {
	if dp.Properties == nil {
		return ""
	}
	return dp.Properties.ReasonString
}

// inflight counts packets awaiting acknowledgement.
func (d *delivery) inflight() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.ids)
}

// sessionState wraps paho's session state to see PUBACK reason codes: a
// broker refusal (e.g. AWS IoT "not authorized", 0x87) still ends the
// transaction, and the operator must learn that the message was dropped.
type sessionState struct {
	*state.State
	s *Session
}

func (ss sessionState) PacketReceived(p *packets.ControlPacket, pubs chan<- *packets.Publish) error {
	if pa, ok := p.Content.(*packets.Puback); ok && pa.ReasonCode >= 0x80 {
		ss.s.pubackRefused(pa)
	}
	return ss.State.PacketReceived(p, pubs)
}

// ConAckReceived notes when the connection came up (see delivery.lost).
func (ss sessionState) ConAckReceived(conn io.Writer, cp *packets.Connect, ca *packets.Connack) error {
	ss.s.d.mu.Lock()
	ss.s.d.upAt = time.Now()
	ss.s.d.mu.Unlock()
	return ss.State.ConAckReceived(conn, cp, ca)
}

// ConnectionLost moves a message the broker keeps closing the connection
// on to the dead letters, and ends its transaction in paho's session as a
// refused PUBACK would, so that it is not sent again.
func (ss sessionState) ConnectionLost(dp *packets.Disconnect) error {
	err := ss.State.ConnectionLost(dp)
	id, seq, why, dead := ss.s.d.lost(dp, time.Now())
	if dead {
		topic := ""
		if m, ok, _ := ss.s.d.ob.Next(seq - 1); ok && m.Seq == seq {
			topic = m.Topic
		}
		ss.s.deadLetter(seq, topic, why)
		ss.State.PacketReceived(&packets.ControlPacket{
			FixedHeader: packets.FixedHeader{Type: packets.PUBACK},
			Content:     &packets.Puback{PacketID: id, ReasonCode: 0x80},
		}, nil)
	}
	return err
}
