package mqtt

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/mqtt/mqtttest"
)

// BenchmarkQoS1Throughput: 8 local publishers → Session (durable outbox) →
// mosquitto → mosquitto_sub, against 8 mosquitto_pub processes → mosquitto →
// mosquitto_sub in the same run. Reports msg/s of both and their ratio.
// Each of tether's publishers has one message in flight (Publish returns
// once it is durable), mosquitto_pub up to 20 by default (in memory,
// awaiting PUBACK); ratio-M1 is against mosquitto_pub -M 1, one in flight
// each as ours.
func BenchmarkQoS1Throughput(b *testing.B) {
	br := mqtttest.NewBroker(b, mqtttest.Options{})
	const n, publishers = 4000, 8
	s := newSession(b, br, "gw-bench", tempOutbox(b), nil)
	awaitConnected(b, s)
	subCert, subKey := mqtttest.DeviceFiles(b, br.PKI, "bench-sub")
	pubCert, pubKey := mqtttest.DeviceFiles(b, br.PKI, "bench-pub")

	// received runs mosquitto_sub until n bench lines arrived after publish() started.
	received := func(topic string, publish func()) time.Duration {
		sub := exec.Command("mosquitto_sub", "-h", "127.0.0.1", "-p", strconv.Itoa(br.Port), "-V", "mqttv5",
			"--cafile", br.CAFile, "--cert", subCert, "--key", subKey, "-q", "1", "-t", topic+"/#", "-i", "bench-sub-"+topic)
		out, err := sub.StdoutPipe()
		require.NoError(b, err)
		require.NoError(b, sub.Start())
		defer func() { _ = sub.Process.Kill(); _ = sub.Wait() }()
		lines := make(chan string, 1024)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		// Probe until mosquitto_sub is subscribed.
		for ready := false; !ready; {
			_, err := s.Publish(context.Background(), topic+"/probe", []byte("probe"), 0)
			require.NoError(b, err)
			select {
			case l := <-lines:
				ready = l == "probe"
			case <-time.After(50 * time.Millisecond):
			}
		}
		start := time.Now()
		go publish()
		for got := 0; got < n; {
			l, ok := <-lines
			require.True(b, ok, "mosquitto_sub ended")
			if l != "probe" {
				got++
			}
		}
		return time.Since(start)
	}

	mosquittoPub := func(topic string, inflight int) func() {
		return mosquittoPubRun(b, br, pubCert, pubKey, n, publishers)(topic, inflight)
	}
	var ours, raw, raw1 time.Duration
	var commits uint64
	for b.Loop() {
		before := s.Status().Outbox.Commits
		ours += received("tether", func() {
			var wg sync.WaitGroup
			for p := range publishers {
				wg.Go(func() {
					for i := range n / publishers {
						_, err := s.Publish(context.Background(), fmt.Sprintf("tether/%d", p), fmt.Appendf(nil, "%d", i), 1)
						if err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
		})
		commits += s.Status().Outbox.Commits - before
		raw += received("raw", mosquittoPub("raw", 20))
		raw1 += received("raw1", mosquittoPub("raw1", 1))
	}
	oursRate := float64(n*b.N) / ours.Seconds()
	rawRate := float64(n*b.N) / raw.Seconds()
	raw1Rate := float64(n*b.N) / raw1.Seconds()
	b.ReportMetric(oursRate, "tether-msg/s")
	b.ReportMetric(float64(n*b.N)/float64(max(commits, 1)), "tether-msgs-per-commit")
	b.ReportMetric(rawRate, "mosquitto_pub-msg/s")
	b.ReportMetric(oursRate/rawRate, "ratio")
	b.ReportMetric(raw1Rate, "mosquitto_pub-M1-msg/s")
	b.ReportMetric(oursRate/raw1Rate, "ratio-M1")
}

// mosquittoPubRun returns a publish function for BenchmarkQoS1Throughput:
// 8 mosquitto_pub processes, each with at most inflight messages awaiting
// their PUBACK (mosquitto_pub -M; 20 is its default).
func mosquittoPubRun(b *testing.B, br *mqtttest.Broker, cert, key string, n, publishers int) func(topic string, inflight int) func() {
	return func(topic string, inflight int) func() {
		return func() {
			var wg sync.WaitGroup
			for p := range publishers {
				wg.Go(func() {
					cmd := exec.Command("mosquitto_pub", "-h", "127.0.0.1", "-p", strconv.Itoa(br.Port), "-V", "mqttv5",
						"--cafile", br.CAFile, "--cert", cert, "--key", key, "-q", "1", "-t", fmt.Sprintf("%s/%d", topic, p),
						"-M", strconv.Itoa(inflight), "-i", fmt.Sprintf("bench-%s-%d", topic, p), "-l")
					var sb strings.Builder
					for i := range n / publishers {
						fmt.Fprintf(&sb, "%d\n", i)
					}
					cmd.Stdin = strings.NewReader(sb.String())
					if out, err := cmd.CombinedOutput(); err != nil {
						b.Errorf("mosquitto_pub: %v: %s", err, out)
					}
				})
			}
			wg.Wait()
		}
	}
}

// BenchmarkReconnect: time from the broker being back (Start returned) to
// the session being connected again, against a fresh session's first
// connection to the same broker in the same run.
func BenchmarkReconnect(b *testing.B) {
	br := mqtttest.NewBroker(b, mqtttest.Options{})
	s := newSession(b, br, "gw-reconnect", tempOutbox(b), func(c *Config) {
		c.MinBackoff, c.MaxBackoff = time.Second, 2*time.Minute // production defaults
	})
	awaitConnected(b, s)
	var reconnect, fresh time.Duration
	for i := 0; b.Loop(); i++ {
		require.NoError(b, br.Stop())
		require.Eventually(b, func() bool { return s.Status().State != StateConnected }, waitLimit, time.Millisecond)
		require.NoError(b, br.Start())
		start := time.Now()
		awaitConnected(b, s)
		reconnect += time.Since(start)

		start = time.Now()
		f := newSession(b, br, fmt.Sprintf("gw-fresh-%d", i), tempOutbox(b), nil)
		awaitConnected(b, f)
		fresh += time.Since(start)
		_ = f.Close()
		// Measure a restart of a broker we were stably connected to, not a
		// flapping one (which is backed off from on purpose).
		b.StopTimer()
		require.Eventually(b, func() bool { return s.Status().Failures == 0 }, waitLimit, 10*time.Millisecond)
		b.StartTimer()
	}
	b.ReportMetric(float64(reconnect.Milliseconds())/float64(b.N), "reconnect-ms")
	b.ReportMetric(float64(fresh.Milliseconds())/float64(b.N), "fresh-connect-ms")
	b.ReportMetric(reconnect.Seconds()/max(fresh.Seconds(), 1e-9), "ratio")
}
