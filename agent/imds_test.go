package agent

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/tetherd/tether/agent/agenttest"
	"github.com/tetherd/tether/credprovider/imds"
)

// curlIMDS runs Debian's curl against the IMDS endpoint, as uid when it is
// not 0, and returns the HTTP status and the body.
func curlIMDS(t *testing.T, uid int, args ...string) (string, string) {
	t.Helper()
	curl, err := exec.LookPath("curl")
	require.NoError(t, err, "curl missing: install the Debian package curl (make deps)")
	argv := append([]string{curl, "-s", "-o", "-", "-w", "\n%{http_code}"}, args...)
	if uid != 0 {
		if os.Geteuid() != 0 {
			t.Fatal("this test runs curl as other users with setpriv and needs root (make test runs as root)")
		}
		argv = append([]string{"setpriv", fmt.Sprintf("--reuid=%d", uid), fmt.Sprintf("--regid=%d", uid), "--clear-groups"}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = []string{"PATH=/usr/bin:/bin"} // no proxy of the environment's
	out, err := cmd.Output()
	require.NoError(t, err, string(out))
	i := strings.LastIndex(string(out), "\n")
	require.GreaterOrEqual(t, i, 0, string(out))
	return string(out[i+1:]), string(out[:i])
}

// TestIMDSEndpoint ensures that the IMDS endpoint issues tokens only for a
// TTL in range and never to a forwarded PUT, refuses IMDSv1, expired tokens,
// tokens of another uid, peers outside the allow lists and a rebinding Host,
// and serves the role's credentials exactly as the socket does; its tokens
// survive a reload.
func TestIMDSEndpoint(t *testing.T) {
	port := agenttest.FreePort(t)
	h := newHarness(t, time.Hour, "")
	h.WriteConfig("", "[serve]\n", fmt.Sprintf("[serve]\nimds_endpoint = \"127.0.0.1:%d\"\nallow_uids = [0, 65533]\n", port))
	logs := h.startLogged()
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	put := func(uid int, ttl string, extra ...string) (string, string) {
		return curlIMDS(t, uid, append([]string{"-X", "PUT", "-H", imds.TTLHeader + ": " + ttl, base + imds.TokenPath}, extra...)...)
	}
	get := func(uid int, path, token string, extra ...string) (string, string) {
		return curlIMDS(t, uid, append([]string{"-H", imds.TokenHeader + ": " + token, base + path}, extra...)...)
	}

	code, tok := put(0, "21600")
	require.Equal(t, "200", code, tok)
	code, body := get(0, imds.CredentialsPath, tok)
	assert.Equal(t, "200", code)
	assert.Equal(t, "device", body)
	code, body = get(0, imds.CredentialsPath+"device", tok)
	require.Equal(t, "200", code, body)
	var got imds.Credentials
	require.NoError(t, json.Unmarshal([]byte(body), &got))
	want := h.credentials("/v1/credentials")
	assert.Equal(t, imds.Credentials{Code: "Success", Type: "AWS-HMAC", LastUpdated: got.LastUpdated,
		AccessKeyID: want.AccessKeyID, SecretAccessKey: want.SecretAccessKey, Token: want.Token, Expiration: want.Expiration}, got)
	code, body = get(0, imds.RegionPath, tok)
	assert.Equal(t, "200", code)
	assert.Equal(t, "eu-west-1", body)

	for _, tc := range []struct {
		name       string
		code, body string
	}{
		{"IMDSv1", "401", func() string { c, _ := curlIMDS(t, 0, base+imds.CredentialsPath); return c }()},
		{"TTL 0", "400", func() string { c, _ := put(0, "0"); return c }()},
		{"TTL 21601", "400", func() string { c, _ := put(0, "21601"); return c }()},
		{"forwarded PUT", "403", func() string { c, _ := put(0, "60", "-H", "X-Forwarded-For: 10.0.0.1"); return c }()},
		{"rebinding Host", "403", func() string { c, _ := get(0, imds.CredentialsPath, tok, "-H", "Host: evil.example.com"); return c }()},
		{"another uid's token", "401", func() string { c, _ := get(65533, imds.CredentialsPath+"device", tok); return c }()},
		{"uid outside the allow list", "403", func() string { c, _ := put(65534, "60"); return c }()},
		{"another role", "404", func() string { c, _ := get(0, imds.CredentialsPath+"admin", tok); return c }()},
	} {
		assert.Equal(t, tc.code, tc.body, tc.name)
	}
	// The refusals are counted under their reasons (docs/metrics.md).
	fams := h.scrape()
	for reason, want := range map[string]float64{"forwarded": 1, "bad_host": 1, "not_allowed": 1, "bad_token": 2, "not_local": 0} {
		assert.Equal(t, want, metric(fams, "tether_peers_refused", `tether_peers_refused_total{endpoint="imds",reason="`+reason+`"}`), reason)
	}
	// A uid in the allow list gets a token of its own.
	code, other := put(65533, "60")
	require.Equal(t, "200", code, other)
	code, body = get(65533, imds.CredentialsPath+"device", other)
	assert.Equal(t, "200", code)
	assert.Contains(t, body, want.SecretAccessKey)

	// A token of 1 s is refused once it has expired.
	code, short := put(0, "1")
	require.Equal(t, "200", code)
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, _ = get(0, imds.CredentialsPath, short)
		if code == "401" || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	assert.Equal(t, "401", code, "the 1-second token still served")

	h.reloadAndWait()
	code, _ = get(0, imds.CredentialsPath+"device", tok)
	assert.Equal(t, "200", code, "a token survives a reload")

	// The refusals are logged, without a token or a credential.
	log := logs.String()
	assert.Contains(t, log, "IMDS endpoint refused a local peer")
	assert.Contains(t, log, "IMDS endpoint refused a forwarded request")
	for _, secret := range []string{tok, other, short, want.SecretAccessKey, want.Token} {
		assert.NotContains(t, log, secret)
	}
}

// TestIMDSEndpointNoAllowList ensures that without allow lists every local
// uid is served, as on the container endpoint.
func TestIMDSEndpointNoAllowList(t *testing.T) {
	port := agenttest.FreePort(t)
	h := newHarness(t, time.Hour, "")
	h.WriteConfig("", "[serve]\n", fmt.Sprintf("[serve]\nimds_endpoint = \"127.0.0.1:%d\"\n", port))
	h.start()
	code, tok := curlIMDS(t, 65534, "-X", "PUT", "-H", imds.TTLHeader+": 60", fmt.Sprintf("http://127.0.0.1:%d%s", port, imds.TokenPath))
	require.Equal(t, "200", code, "with no allow list every local uid is served")
	code, _ = curlIMDS(t, 65534, "-H", imds.TokenHeader+": "+tok, fmt.Sprintf("http://127.0.0.1:%d%sdevice", port, imds.CredentialsPath))
	assert.Equal(t, "200", code)
}

// TestIMDSEndpointConfig ensures that a non-loopback IMDS address is refused
// when the configuration is loaded, in one line that says what to do.
func TestIMDSEndpointConfig(t *testing.T) {
	e := agenttest.New(t, time.Hour, "")
	for _, bad := range []string{"0.0.0.0:1338", "192.0.2.1:80", "127.0.0.1", "localhost:1338"} {
		e.WriteConfig("", "[serve]\n", fmt.Sprintf("[serve]\nimds_endpoint = %q\n", bad))
		_, err := LoadConfig(e.Config)
		require.Error(t, err, bad)
		line := ErrorLine(err)
		assert.NotContains(t, line, "\n")
		assert.Contains(t, line, "serve.imds_endpoint")
		assert.Contains(t, line, "ip addr add 169.254.169.254/32 dev lo", bad)
	}
	e.WriteConfig("", "[serve]\n", "[serve]\nimds_endpoint = \"[::1]:1338\"\n")
	cfg, err := LoadConfig(e.Config)
	require.NoError(t, err)
	assert.Equal(t, "[::1]:1338", cfg.Serve.IMDSEndpoint)
}

// TestIMDSEndpointHopLimit ensures that the IMDS endpoint's answers leave
// with an IP TTL of 1 on the wire, as read from the loopback interface, and
// that the agent's other endpoints keep the system's default.
func TestIMDSEndpointHopLimit(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test reads packets from lo (AF_PACKET) and needs root (make test runs as root)")
	}
	port, containerPort := agenttest.FreePort(t), agenttest.FreePort(t)
	h := newHarness(t, time.Hour, "")
	h.WriteConfig("", "[serve]\n", fmt.Sprintf("[serve]\nimds_endpoint = \"127.0.0.1:%d\"\ncontainer_endpoint = \"127.0.0.1:%d\"\n", port, containerPort))
	h.start()
	lo, err := net.InterfaceByName("lo")
	require.NoError(t, err)
	ethIP := uint16(unix.ETH_P_IP)
	proto := int(ethIP<<8 | ethIP>>8) // htons
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, proto)
	require.NoError(t, err)
	defer unix.Close(fd)
	require.NoError(t, unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: uint16(proto), Ifindex: lo.Index}))

	// ttlsFrom returns the TTLs of the TCP packets with data sent from port
	// while send ran: the answer. (The handshake's SYN-ACK has the limit
	// only where the kernel lets the listening socket have it.)
	ttlsFrom := func(port int, send func()) []int {
		t.Helper()
		send()
		var ttls []int
		buf := make([]byte, 65536)
		for {
			n, _, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT)
			if err != nil {
				break
			}
			if n < 24 || buf[0]>>4 != 4 || buf[9] != unix.IPPROTO_TCP {
				continue
			}
			ihl := int(buf[0]&0x0f) * 4
			if n < ihl+20 || int(binary.BigEndian.Uint16(buf[ihl:])) != port {
				continue
			}
			if data := int(binary.BigEndian.Uint16(buf[2:])) - ihl - int(buf[ihl+12]>>4)*4; data > 0 {
				ttls = append(ttls, int(buf[8]))
			}
		}
		require.NotEmpty(t, ttls, "no answer from port %d seen on lo", port)
		return ttls
	}
	for _, ttl := range ttlsFrom(port, func() {
		code, _ := curlIMDS(t, 0, "-X", "PUT", "-H", imds.TTLHeader+": 60", fmt.Sprintf("http://127.0.0.1:%d%s", port, imds.TokenPath))
		require.Equal(t, "200", code)
	}) {
		assert.Equal(t, 1, ttl)
	}
	for _, ttl := range ttlsFrom(containerPort, func() {
		code, _ := curlIMDS(t, 0, fmt.Sprintf("http://127.0.0.1:%d/", containerPort))
		require.Equal(t, "401", code)
	}) {
		assert.Greater(t, ttl, 1, "the container endpoint keeps the default TTL")
	}
}
