package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/tetherd/tether/mqtt"
	"github.com/tetherd/tether/store"
)

// The MQTT endpoints of the socket, when [mqtt] is configured:
//
//	POST /v1/mqtt/publish?topic=T&qos=Q   body = payload; 202 once durably queued
//	GET  /v1/mqtt/subscribe?topic=FILTER  NDJSON stream of mqtt.Message
//
// qos defaults to 1. Errors are the API's one shape: 400 for a topic, QoS or
// payload that breaks a rule (code names the rule), 405 wrong method, 507
// outbox full, 503 outbox unavailable. Peer checks are api.checkPeer's.

// writeRuleError answers a broken MQTT rule with 400 and the rule's code.
func writeRuleError(w http.ResponseWriter, err error) bool {
	var re *mqtt.RuleError
	if errors.As(err, &re) {
		writeError(w, http.StatusBadRequest, re.Code, re.Message)
		return true
	}
	return false
}

func mqttPublish(s *mqtt.Session, w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "use POST /v1/mqtt/publish?topic=T&qos=Q with the payload as body")
		return
	}
	q := r.URL.Query()
	topic := q.Get("topic")
	qos := byte(1)
	if v := q.Get("qos"); v != "" {
		n, err := strconv.ParseUint(v, 10, 8)
		if err != nil {
			writeError(w, http.StatusBadRequest, "qos_invalid", fmt.Sprintf("qos %q is not a number: use 0 or 1", v))
			return
		}
		qos = byte(n)
	}
	// Check what can be checked before reading a possibly huge body.
	if writeRuleError(w, mqtt.ValidatePublish(topic, nil, qos)) {
		return
	}
	payload, err := io.ReadAll(http.MaxBytesReader(w, r.Body, mqtt.MaxPayloadBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusBadRequest, "payload_too_large", fmt.Sprintf("payload exceeds %d bytes (128 KiB), the AWS IoT Core limit", mqtt.MaxPayloadBytes))
			return
		}
		writeError(w, http.StatusBadRequest, "payload_unreadable", "reading the request body failed: "+err.Error())
		return
	}
	seq, err := s.Publish(r.Context(), topic, payload, qos)
	switch {
	case err == nil:
		writeJSON(w, http.StatusAccepted, map[string]uint64{"seq": seq})
	case writeRuleError(w, err):
	case errors.Is(err, store.ErrOutboxFull):
		writeError(w, http.StatusInsufficientStorage, "outbox_full", err.Error())
	case errors.Is(err, r.Context().Err()):
		// The client went away before the commit queue took the message.
	default:
		writeError(w, http.StatusServiceUnavailable, "outbox_unavailable", err.Error())
	}
}

func mqttSubscribe(s *mqtt.Session, w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "use GET /v1/mqtt/subscribe?topic=FILTER")
		return
	}
	sub, err := s.Subscribe(r.Context(), r.URL.Query().Get("topic"))
	if err != nil {
		if !writeRuleError(w, err) {
			writeError(w, http.StatusServiceUnavailable, "subscribe_failed", err.Error())
		}
		return
	}
	defer sub.Close()
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	_ = rc.Flush()
	enc := json.NewEncoder(w)
	for {
		select {
		case <-r.Context().Done():
			return
		case m, ok := <-sub.C:
			if !ok {
				return
			}
			if enc.Encode(m) != nil || rc.Flush() != nil {
				return
			}
		}
	}
}
