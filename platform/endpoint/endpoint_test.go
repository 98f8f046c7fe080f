package endpoint_test

import (
	"net"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/tetherd/tether/platform/endpoint"
)

// TestParse ensures that an endpoint is a host or host:port and nothing
// else, and that each refusal says what is wrong.
func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    endpoint.Endpoint
		wantErr string
	}{
		{in: "c1abc.credentials.iot.eu-west-1.amazonaws.com", want: endpoint.Endpoint{Host: "c1abc.credentials.iot.eu-west-1.amazonaws.com"}},
		{in: "a1-ats.iot.eu-west-1.amazonaws.com:443", want: endpoint.Endpoint{Host: "a1-ats.iot.eu-west-1.amazonaws.com", Port: 443}},
		{in: "127.0.0.1:8883", want: endpoint.Endpoint{Host: "127.0.0.1", Port: 8883}},
		{in: "[::1]:8443", want: endpoint.Endpoint{Host: "::1", Port: 8443}},
		{in: "::1", want: endpoint.Endpoint{Host: "::1"}},
		{in: "https://c1abc.example.com", wantErr: "without a scheme or path"},
		{in: "c1abc.example.com/x", wantErr: "without a scheme or path"},
		{in: "x.example.com:99999", wantErr: "invalid port"},
		{in: "x.example.com:0", wantErr: "invalid port"},
		{in: "x.example.com:https", wantErr: "invalid port"},
		{in: ":443", wantErr: "has no host"},
		{in: "", wantErr: "has no host"},
		{in: "bad_host.example.com", wantErr: "not a valid host name"},
		{in: "a..b", wantErr: "not a valid host name"},
		{in: strings.Repeat("a", 64) + ".com", wantErr: "not a valid host name"},
	} {
		got, err := endpoint.Parse(tc.in)
		if tc.wantErr != "" {
			assert.ErrorContains(t, err, tc.wantErr, tc.in)
			continue
		}
		if assert.NoError(t, err, tc.in) {
			assert.Equal(t, tc.want, got, tc.in)
		}
	}
}

// TestParseLoopback ensures that a listen address is a loopback IP with a
// port, so the container endpoint is never reachable from the network.
func TestParseLoopback(t *testing.T) {
	for _, ok := range []string{"127.0.0.1:2020", "127.0.0.9:1", "[::1]:2020"} {
		e, err := endpoint.ParseLoopback(ok)
		assert.NoError(t, err, ok)
		assert.Equal(t, ok, e.String())
	}
	for _, bad := range []string{"0.0.0.0:2020", "localhost:2020", "127.0.0.1", "192.168.1.1:2020", "[::]:2020"} {
		_, err := endpoint.ParseLoopback(bad)
		assert.ErrorContains(t, err, "loopback", bad)
	}
}

// TestParseLocal ensures that a listen address for the IMDS endpoint is a
// loopback address, or one the loopback interface holds, with a port.
func TestParseLocal(t *testing.T) {
	for _, ok := range []string{"127.0.0.1:1338", "[::1]:1338"} {
		e, err := endpoint.ParseLocal(ok)
		assert.NoError(t, err, ok)
		assert.Equal(t, ok, e.String())
	}
	for _, bad := range []string{"0.0.0.0:80", "localhost:1338", "127.0.0.1", "192.0.2.1:80", "[::]:80"} {
		_, err := endpoint.ParseLocal(bad)
		assert.ErrorContains(t, err, "dev lo", bad)
	}
	if on, err := endpoint.OnLoopbackInterface(net.ParseIP("169.254.169.254")); err == nil && !on {
		_, err := endpoint.ParseLocal("169.254.169.254:80")
		assert.ErrorContains(t, err, "ip addr add 169.254.169.254/32 dev lo")
	}
	on, err := endpoint.OnLoopbackInterface(net.ParseIP("127.0.0.1"))
	assert.NoError(t, err)
	assert.True(t, on)
	on, err = endpoint.OnLoopbackInterface(net.ParseIP("192.0.2.1"))
	assert.NoError(t, err)
	assert.False(t, on)
}
