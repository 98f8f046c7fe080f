package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/mqtt"
	"github.com/tetherd/tether/mqtt/mqtttest"
	"github.com/tetherd/tether/store"
)

// TestMQTTEndpoints ensures that the socket's MQTT endpoints queue and
// stream messages through the session, answer every broken rule, wrong
// method and full or closed outbox in the API's one error shape, and that a
// client leaving a stream ends only its subscription.
func TestMQTTEndpoints(t *testing.T) {
	const wait = 60 * time.Second
	b := mqtttest.NewBroker(t, mqtttest.Options{})
	db, err := store.Open(filepath.Join(t.TempDir(), "s.db"), store.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	ob, err := db.Outbox(store.OutboxOptions{MaxMessages: 50})
	require.NoError(t, err)
	t.Cleanup(func() { ob.Close() })
	cert := mqtttest.Device(t, b.PKI, "gw-http").TLSCertificate()
	s, err := mqtt.New(context.Background(), mqtt.Config{Endpoint: b.Addr, ThingName: "gw-http", Certificate: &cert,
		RootCAs: b.PKI.Pool(), Outbox: ob, MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	require.NoError(t, s.AwaitConnection(ctx))

	a := &api{roles: func() roleSet { return nil }, allow: func() AllowList { return AllowList{} },
		status: func() Status { return Status{} }, mqtt: func() *mqtt.Session { return s }, log: slog.New(slog.DiscardHandler)}
	srv := httptest.NewServer(a.routes())
	t.Cleanup(srv.Close)

	// A subscriber stream over HTTP.
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/v1/mqtt/subscribe?topic=dt/%2B/x", nil)
	stream, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, stream.StatusCode)
	lines := bufio.NewScanner(stream.Body)

	publish := func(topic, qos string, body []byte) (int, map[string]any) {
		q := url.Values{"topic": {topic}}
		if qos != "" {
			q.Set("qos", qos)
		}
		resp, err := http.Post(srv.URL+"/v1/mqtt/publish?"+q.Encode(), "application/octet-stream", bytes.NewReader(body))
		require.NoError(t, err)
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}

	tests := []struct {
		name   string
		topic  string
		qos    string
		body   []byte
		status int
		code   string
	}{
		{"accepted", "dt/a/x", "1", []byte("hello"), http.StatusAccepted, ""},
		{"default qos", "dt/a/x", "", []byte("hello2"), http.StatusAccepted, ""},
		{"wildcard topic", "dt/+/x", "1", []byte("x"), http.StatusBadRequest, "topic_wildcard"},
		{"empty topic", "", "1", []byte("x"), http.StatusBadRequest, "topic_empty"},
		{"too deep", "a/b/c/d/e/f/g/h/i", "0", nil, http.StatusBadRequest, "topic_too_deep"},
		{"qos 2", "dt/a/x", "2", []byte("x"), http.StatusBadRequest, "qos_unsupported"},
		{"qos garbage", "dt/a/x", "one", []byte("x"), http.StatusBadRequest, "qos_invalid"},
		{"oversized payload", "dt/a/x", "1", make([]byte, mqtt.MaxPayloadBytes+1), http.StatusBadRequest, "payload_too_large"},
		{"not utf8", "dt/\xff", "1", nil, http.StatusBadRequest, "topic_not_utf8"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, body := publish(tc.topic, tc.qos, tc.body)
			assert.Equal(t, tc.status, status, "%v", body)
			if tc.code != "" {
				assert.Equal(t, tc.code, body["code"])
				assert.NotEmpty(t, body["message"])
			} else {
				assert.NotZero(t, body["seq"])
			}
		})
	}

	for _, want := range []string{"hello", "hello2"} {
		require.True(t, lines.Scan(), "stream ended: %v", lines.Err())
		var m mqtt.Message
		require.NoError(t, json.Unmarshal(lines.Bytes(), &m), "NDJSON line %q", lines.Text())
		assert.Equal(t, "dt/a/x", m.Topic)
		assert.Equal(t, want, string(m.Payload))
		assert.Contains(t, lines.Text(), `"properties"`)
	}

	// The client disconnects mid-stream: its subscription goes, the session stays.
	cancel()
	stream.Body.Close()
	require.Eventually(t, func() bool { return s.Status().Subscribers == 0 }, wait, 5*time.Millisecond)
	status, _ := publish("dt/a/x", "1", []byte("after"))
	assert.Equal(t, http.StatusAccepted, status)

	t.Run("wrong methods and bad filter", func(t *testing.T) {
		for _, c := range []struct{ method, path, allow string }{
			{http.MethodGet, "/v1/mqtt/publish?topic=a", http.MethodPost},
			{http.MethodPost, "/v1/mqtt/subscribe?topic=a", http.MethodGet},
		} {
			req, _ := http.NewRequest(c.method, srv.URL+c.path, nil)
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			var e apiError
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&e))
			resp.Body.Close()
			assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
			assert.Equal(t, c.allow, resp.Header.Get("Allow"))
			assert.Equal(t, "method_not_allowed", e.Code)
		}
		resp, err := http.Get(srv.URL + "/v1/mqtt/subscribe?topic=a/%23/b")
		require.NoError(t, err)
		var e apiError
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&e))
		resp.Body.Close()
		assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
		assert.Equal(t, "filter_invalid", e.Code)
	})

	t.Run("outbox full then unavailable", func(t *testing.T) {
		require.NoError(t, b.Stop()) // nothing drains now
		var status int
		var body map[string]any
		for range 60 {
			status, body = publish("dt/a/x", "1", []byte("fill"))
			if status != http.StatusAccepted {
				break
			}
		}
		assert.Equal(t, http.StatusInsufficientStorage, status)
		assert.Equal(t, "outbox_full", body["code"])
		assert.True(t, strings.Contains(body["message"].(string), "limits"))

		require.NoError(t, ob.Close())
		status, body = publish("dt/a/x", "1", []byte("x"))
		assert.Equal(t, http.StatusServiceUnavailable, status)
		assert.Equal(t, "outbox_unavailable", body["code"])
	})
}

// TestMQTTEndpointsWithoutSession ensures that an agent without [mqtt]
// answers the MQTT paths with a 404 that says what to configure.
func TestMQTTEndpointsWithoutSession(t *testing.T) {
	a := &api{roles: func() roleSet { return nil }, allow: func() AllowList { return AllowList{} },
		status: func() Status { return Status{} }, log: slog.New(slog.DiscardHandler)}
	for _, path := range []string{"/v1/mqtt/publish?topic=a", "/v1/mqtt/subscribe?topic=a", "/v1/mqtt/other"} {
		rec := httptest.NewRecorder()
		a.routes().ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, nil))
		assert.Equal(t, http.StatusNotFound, rec.Code, path)
		assert.Contains(t, rec.Body.String(), `"mqtt_not_configured"`, path)
	}
}
