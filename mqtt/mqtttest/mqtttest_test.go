package mqtttest

import (
	"os/exec"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestBrokerRestartsOnSamePortAndRequiresCertificate ensures that the test broker requires a device certificate from its PKI and comes back on the same port.
func TestBrokerRestartsOnSamePortAndRequiresCertificate(t *testing.T) {
	b := NewBroker(t, Options{})
	cert, key := DeviceFiles(t, b.PKI, "dev-1")
	badCert, badKey := DeviceFiles(t, NewPKI(t), "intruder")
	pub := func(cert, key string) error {
		out, err := exec.Command("mosquitto_pub", "-h", "127.0.0.1", "-p", itoa(b.Port), "-V", "mqttv5",
			"--cafile", b.CAFile, "--cert", cert, "--key", key, "-t", "t/1", "-m", "hi", "-q", "1").CombinedOutput()
		if err != nil {
			return &exec.ExitError{Stderr: out}
		}
		return nil
	}
	require.NoError(t, pub(cert, key))
	require.Error(t, pub(badCert, badKey), "a device certificate from another CA is refused")

	port := b.Port
	require.NoError(t, b.Kill())
	require.False(t, b.Running())
	require.Error(t, pub(cert, key), "broker down")
	require.NoError(t, b.Start())
	require.Equal(t, port, b.Port)
	require.NoError(t, pub(cert, key))
	require.NoError(t, b.Stop())
	require.NoError(t, b.Start())
	require.Equal(t, 3, b.Starts())
}

func itoa(i int) string { return strconv.Itoa(i) }
