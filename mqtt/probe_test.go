package mqtt

import (
	"context"
	"math/big"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/mqtt/mqtttest"
)

// TestProbeConnect ensures that ProbeConnect's CONNECT is accepted for a
// trusted device and refused for a revoked one, and that it resumes the
// device's persistent session instead of starting a clean one, so the
// message queued for it is still there afterwards. (That it acknowledges
// nothing is by construction — manual acknowledgement, never sent — which
// this test cannot observe: the probe disconnects before mosquitto
// redelivers.)
func TestProbeConnect(t *testing.T) {
	b := mqtttest.NewBroker(t, mqtttest.Options{CRL: true})
	dev := mqtttest.Device(t, b.PKI, "gw-0001")
	certFile, keyFile := mqtttest.DeviceFiles(t, b.PKI, "gw-0001")
	pubCert, pubKey := mqtttest.DeviceFiles(t, b.PKI, "publisher")
	client := func(name string, args ...string) (string, error) {
		cert, key := certFile, keyFile
		if name == "mosquitto_pub" {
			cert, key = pubCert, pubKey
		}
		base := []string{"-h", "127.0.0.1", "-p", strconv.Itoa(b.Port), "-V", "mqttv5", "--cafile", b.CAFile, "--cert", cert, "--key", key, "-q", "1"}
		out, err := exec.Command(name, append(base, args...)...).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	// The device's persistent session holds a subscription, and a message
	// arrives for it while it is away.
	_, err := client("mosquitto_sub", "-i", "gw-0001", "-c", "-x", "3600", "-t", "dt/gw-0001/cmd", "-E")
	require.NoError(t, err)
	_, err = client("mosquitto_pub", "-i", "publisher", "-t", "dt/gw-0001/cmd", "-m", "queued")
	require.NoError(t, err)

	cert := dev.TLSCertificate()
	cfg := Config{Endpoint: b.Addr, ThingName: "gw-0001", RootCAs: b.PKI.Pool(), Certificate: &cert, SessionExpiry: time.Hour}
	require.NoError(t, ProbeConnect(context.Background(), cfg))

	out, err := client("mosquitto_sub", "-i", "gw-0001", "-c", "-x", "3600", "-t", "dt/gw-0001/cmd", "-C", "1", "-W", "10")
	require.NoError(t, err, out)
	assert.Equal(t, "queued", out, "the probe left the queued message to the session")

	require.NoError(t, b.RefuseCertificates([]*big.Int{dev.Cert.SerialNumber}))
	err = ProbeConnect(context.Background(), cfg)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "connection to "+b.Addr)
}
