package mqtt

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/mqtt/mqtttest"
	"github.com/tetherd/tether/store"
)

func TestHTTPHandler(t *testing.T) {
	b := mqtttest.NewBroker(t, mqtttest.Options{})
	_, ob := openOutbox(t, filepath.Join(t.TempDir(), "s.db"), store.OutboxOptions{MaxMessages: 50})
	s := newSession(t, b, "gw-http", ob, nil)
	awaitConnected(t, s)
	srv := httptest.NewServer(NewHTTPHandler(s))
	t.Cleanup(srv.Close)

	// A subscriber stream over HTTP.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
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
		{"oversized payload", "dt/a/x", "1", make([]byte, MaxPayloadBytes+1), http.StatusBadRequest, "payload_too_large"},
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
		var m Message
		require.NoError(t, json.Unmarshal(lines.Bytes(), &m), "NDJSON line %q", lines.Text())
		assert.Equal(t, "dt/a/x", m.Topic)
		assert.Equal(t, want, string(m.Payload))
		assert.Contains(t, lines.Text(), `"properties"`)
	}

	// The client disconnects mid-stream: its subscription goes, the session stays.
	cancel()
	stream.Body.Close()
	require.Eventually(t, func() bool { return s.Status().Subscribers == 0 }, waitLimit, 5*1e6)
	status, _ := publish("dt/a/x", "1", []byte("after"))
	assert.Equal(t, http.StatusAccepted, status)

	t.Run("wrong methods and bad filter", func(t *testing.T) {
		resp, err := http.Get(srv.URL + "/v1/mqtt/publish?topic=a")
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
		resp, err = http.Post(srv.URL+"/v1/mqtt/subscribe?topic=a", "", nil)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
		resp, err = http.Get(srv.URL + "/v1/mqtt/subscribe?topic=a/%23/b")
		require.NoError(t, err)
		var e httpError
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
