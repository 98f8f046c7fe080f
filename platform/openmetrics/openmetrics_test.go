package openmetrics_test

import (
	"math"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/platform/openmetrics"
	"github.com/tetherd/tether/platform/openmetrics/openmetricstest"
)

// sample writes one family of each type, with labels that need escaping.
func sample(t *testing.T, f openmetrics.Format) []byte {
	t.Helper()
	e := openmetrics.NewEncoder(f)
	e.Begin(openmetrics.Family{Name: "app_up", Type: openmetrics.TypeGauge, Help: "whether the app is up"})
	e.Sample(1)
	e.Begin(openmetrics.Family{Name: "app_refreshes", Type: openmetrics.TypeCounter, Help: "refreshes, by role"})
	e.Sample(3, openmetrics.Label{Name: "role", Value: "device"})
	e.Sample(0, openmetrics.Label{Name: "role", Value: "quote\" back\\slash\nnewline"})
	e.Begin(openmetrics.Family{Name: "app_expiry_seconds", Type: openmetrics.TypeGauge, Unit: "seconds", Help: `help with \ and "quotes"` + "\nand a newline"})
	e.Sample(1799.5, openmetrics.Label{Name: "role", Value: "device"})
	e.Begin(openmetrics.Family{Name: "app_latency_seconds", Type: openmetrics.TypeHistogram, Unit: "seconds", Help: "latency"})
	h, err := openmetrics.NewHistogram(0.01, 0.1, 1)
	require.NoError(t, err)
	for _, v := range []float64{0.005, 0.05, 0.05, 2} {
		h.Observe(v)
	}
	e.Histogram(h.Snapshot(), openmetrics.Label{Name: "qos", Value: "1"})
	e.Begin(openmetrics.Family{Name: "app_build", Type: openmetrics.TypeInfo, Help: "the build"})
	e.Sample(1, openmetrics.Label{Name: "version", Value: "v1.2.3"})
	e.Begin(openmetrics.Family{Name: "app_empty", Type: openmetrics.TypeGauge, Help: "a family without series"})
	b, err := e.Bytes()
	require.NoError(t, err)
	return b
}

// TestEncoderText ensures that the Text format names counters and infos by
// their samples, escapes HELP as 0.0.4 does (backslash and newline only)
// and has no UNIT and no EOF.
func TestEncoderText(t *testing.T) {
	want := `# TYPE app_up gauge
# HELP app_up whether the app is up
app_up 1
# TYPE app_refreshes_total counter
# HELP app_refreshes_total refreshes, by role
app_refreshes_total{role="device"} 3
app_refreshes_total{role="quote\" back\\slash\nnewline"} 0
# TYPE app_expiry_seconds gauge
# HELP app_expiry_seconds help with \\ and "quotes"\nand a newline
app_expiry_seconds{role="device"} 1799.5
# TYPE app_latency_seconds histogram
# HELP app_latency_seconds latency
app_latency_seconds_bucket{qos="1",le="0.01"} 1
app_latency_seconds_bucket{qos="1",le="0.1"} 3
app_latency_seconds_bucket{qos="1",le="1"} 3
app_latency_seconds_bucket{qos="1",le="+Inf"} 4
app_latency_seconds_count{qos="1"} 4
app_latency_seconds_sum{qos="1"} 2.105
# TYPE app_build_info gauge
# HELP app_build_info the build
app_build_info{version="v1.2.3"} 1
# TYPE app_empty gauge
# HELP app_empty a family without series
`
	assert.Equal(t, want, string(sample(t, openmetrics.Text)))
}

// TestEncoderOpenMetrics ensures that OpenMetrics names families without
// the type's suffix, writes UNIT, escapes quotes in HELP, writes bucket
// bounds in canonical form and ends with # EOF.
func TestEncoderOpenMetrics(t *testing.T) {
	want := `# TYPE app_up gauge
# HELP app_up whether the app is up
app_up 1
# TYPE app_refreshes counter
# HELP app_refreshes refreshes, by role
app_refreshes_total{role="device"} 3
app_refreshes_total{role="quote\" back\\slash\nnewline"} 0
# TYPE app_expiry_seconds gauge
# UNIT app_expiry_seconds seconds
# HELP app_expiry_seconds help with \\ and \"quotes\"\nand a newline
app_expiry_seconds{role="device"} 1799.5
# TYPE app_latency_seconds histogram
# UNIT app_latency_seconds seconds
# HELP app_latency_seconds latency
app_latency_seconds_bucket{qos="1",le="0.01"} 1
app_latency_seconds_bucket{qos="1",le="0.1"} 3
app_latency_seconds_bucket{qos="1",le="1.0"} 3
app_latency_seconds_bucket{qos="1",le="+Inf"} 4
app_latency_seconds_count{qos="1"} 4
app_latency_seconds_sum{qos="1"} 2.105
# TYPE app_build info
# HELP app_build the build
app_build_info{version="v1.2.3"} 1
# TYPE app_empty gauge
# HELP app_empty a family without series
# EOF
`
	assert.Equal(t, want, string(sample(t, openmetrics.OpenMetrics)))
}

// TestParsers ensures that the Python client's parsers (and promtool for
// the Text format) read both formats back to the values written, escaped
// labels and help included.
func TestParsers(t *testing.T) {
	for _, f := range []openmetrics.Format{openmetrics.Text, openmetrics.OpenMetrics} {
		t.Run(f.ContentType(), func(t *testing.T) {
			fams := openmetricstest.Parse(t, f, sample(t, f))
			assert.Equal(t, 3.0, openmetricstest.Value(t, fams, "app_refreshes", `app_refreshes_total{role="device"}`))
			assert.Equal(t, 0.0, openmetricstest.Value(t, fams, "app_refreshes", openmetricstest.Key("app_refreshes_total", map[string]string{"role": "quote\" back\\slash\nnewline"})))
			assert.Equal(t, "counter", fams["app_refreshes"].Type)
			assert.Equal(t, "help with \\ and \"quotes\"\nand a newline", fams["app_expiry_seconds"].Help)
			assert.Equal(t, 1799.5, openmetricstest.Value(t, fams, "app_expiry_seconds", `app_expiry_seconds{role="device"}`))
			assert.Equal(t, 4.0, openmetricstest.Value(t, fams, "app_latency_seconds", `app_latency_seconds_bucket{le="+Inf",qos="1"}`))
			assert.Equal(t, "histogram", fams["app_latency_seconds"].Type)
			if f == openmetrics.OpenMetrics {
				assert.Equal(t, "seconds", fams["app_latency_seconds"].Unit)
				assert.Equal(t, "info", fams["app_build"].Type)
				assert.Equal(t, 1.0, openmetricstest.Value(t, fams, "app_build", `app_build_info{version="v1.2.3"}`))
			}
		})
	}
}

// TestEncoderRefuses ensures that every mistake a scraper would reject is
// reported by Bytes rather than written.
func TestEncoderRefuses(t *testing.T) {
	gauge := openmetrics.Family{Name: "g", Type: openmetrics.TypeGauge}
	hist := openmetrics.Family{Name: "h", Type: openmetrics.TypeHistogram}
	snap := openmetrics.HistogramSnapshot{Bounds: []float64{1}, Counts: []uint64{1, 0}}
	for _, tc := range []struct {
		name  string
		write func(e *openmetrics.Encoder)
		want  string
	}{
		{"metric name", func(e *openmetrics.Encoder) { e.Begin(openmetrics.Family{Name: "1bad"}) }, "metric name"},
		{"empty name", func(e *openmetrics.Encoder) { e.Begin(openmetrics.Family{}) }, "metric name"},
		{"unit not in name", func(e *openmetrics.Encoder) {
			e.Begin(openmetrics.Family{Name: "x_bytes", Unit: "seconds"})
		}, "unit"},
		{"unit on info", func(e *openmetrics.Encoder) {
			e.Begin(openmetrics.Family{Name: "x_seconds", Type: openmetrics.TypeInfo, Unit: "seconds"})
		}, "unit"},
		{"counter with _total", func(e *openmetrics.Encoder) {
			e.Begin(openmetrics.Family{Name: "x_total", Type: openmetrics.TypeCounter})
		}, "suffix"},
		{"name clash", func(e *openmetrics.Encoder) {
			e.Begin(openmetrics.Family{Name: "x_total"})
			e.Begin(openmetrics.Family{Name: "x", Type: openmetrics.TypeCounter})
		}, "already used"},
		{"family twice", func(e *openmetrics.Encoder) { e.Begin(gauge); e.Begin(gauge) }, "already used"},
		{"sample first", func(e *openmetrics.Encoder) { e.Sample(1) }, "before any Begin"},
		{"label name", func(e *openmetrics.Encoder) { e.Begin(gauge); e.Sample(1, openmetrics.Label{Name: "a-b"}) }, "label name"},
		{"reserved label", func(e *openmetrics.Encoder) { e.Begin(gauge); e.Sample(1, openmetrics.Label{Name: "__name__"}) }, "label name"},
		{"label twice", func(e *openmetrics.Encoder) {
			e.Begin(gauge)
			e.Sample(1, openmetrics.Label{Name: "a"}, openmetrics.Label{Name: "a"})
		}, "twice"},
		{"negative counter", func(e *openmetrics.Encoder) {
			e.Begin(openmetrics.Family{Name: "c", Type: openmetrics.TypeCounter})
			e.Sample(-1)
		}, "counter"},
		{"NaN counter", func(e *openmetrics.Encoder) {
			e.Begin(openmetrics.Family{Name: "c", Type: openmetrics.TypeCounter})
			e.Sample(math.NaN())
		}, "counter"},
		{"info not 1", func(e *openmetrics.Encoder) {
			e.Begin(openmetrics.Family{Name: "i", Type: openmetrics.TypeInfo})
			e.Sample(2)
		}, "info"},
		{"sample on histogram", func(e *openmetrics.Encoder) { e.Begin(hist); e.Sample(1) }, "Histogram"},
		{"histogram on gauge", func(e *openmetrics.Encoder) { e.Begin(gauge); e.Histogram(snap) }, "Histogram on a gauge"},
		{"le label", func(e *openmetrics.Encoder) { e.Begin(hist); e.Histogram(snap, openmetrics.Label{Name: "le"}) }, "le"},
		{"counts", func(e *openmetrics.Encoder) {
			e.Begin(hist)
			e.Histogram(openmetrics.HistogramSnapshot{Bounds: []float64{1}, Counts: []uint64{1}})
		}, "counts"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := openmetrics.NewEncoder(openmetrics.OpenMetrics)
			tc.write(e)
			_, err := e.Bytes()
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// TestEncoderInvalidUTF8 ensures that a label value that is not UTF-8
// (a role name is the operator's) is written as U+FFFD, not as bytes a
// parser refuses.
func TestEncoderInvalidUTF8(t *testing.T) {
	e := openmetrics.NewEncoder(openmetrics.OpenMetrics)
	e.Begin(openmetrics.Family{Name: "g", Help: "x"})
	e.Sample(1, openmetrics.Label{Name: "role", Value: "a\xffb"})
	b, err := e.Bytes()
	require.NoError(t, err)
	assert.Contains(t, string(b), `g{role="a`+"\uFFFD"+`b"} 1`)
	openmetricstest.Parse(t, openmetrics.OpenMetrics, b)
}

// TestValues ensures that whole numbers are written as integers (byte
// counts and timestamps stay readable) and the rest as Go's shortest float.
func TestValues(t *testing.T) {
	for v, want := range map[float64]string{
		0: "0", 1048576: "1048576", 1.7e9: "1700000000", -3: "-3", 0.25: "0.25",
		1e300: "1e+300", math.Inf(1): "+Inf", math.Inf(-1): "-Inf", math.NaN(): "NaN",
	} {
		e := openmetrics.NewEncoder(openmetrics.Text)
		e.Begin(openmetrics.Family{Name: "g"})
		e.Sample(v)
		b, err := e.Bytes()
		require.NoError(t, err)
		assert.Equal(t, "# TYPE g gauge\ng "+want+"\n", string(b))
	}
}

// TestNegotiate ensures that OpenMetrics is answered only to a client that
// asks for it (version 1.0.0 or none) at least as much as for plain text.
func TestNegotiate(t *testing.T) {
	for accept, want := range map[string]openmetrics.Format{
		"":                             openmetrics.Text,
		"*/*":                          openmetrics.Text,
		"text/plain":                   openmetrics.Text,
		"application/json":             openmetrics.Text,
		"application/openmetrics-text": openmetrics.OpenMetrics,
		"application/openmetrics-text; version=1.0.0":                openmetrics.OpenMetrics,
		`Application/OpenMetrics-Text;version="1.0.0";charset=utf-8`: openmetrics.OpenMetrics,
		"application/openmetrics-text;version=0.0.1":                 openmetrics.Text,
		"application/openmetrics-text;version=2.0.0":                 openmetrics.Text,
		"application/openmetrics-text;q=0":                           openmetrics.Text,
		"text/plain;q=0.9, application/openmetrics-text;q=0.5":       openmetrics.Text,
		"text/plain;q=0.5, application/openmetrics-text;q=0.9":       openmetrics.OpenMetrics,
		// What Prometheus 2.x sends.
		"application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1": openmetrics.OpenMetrics,
		// What Prometheus sends with OpenMetrics turned off.
		"text/plain;version=0.0.4;q=1,*/*;q=0.1": openmetrics.Text,
	} {
		assert.Equal(t, want, openmetrics.Negotiate(accept), "Accept: %s", accept)
	}
	assert.True(t, strings.HasPrefix(openmetrics.OpenMetrics.ContentType(), "application/openmetrics-text; version=1.0.0"))
	assert.True(t, strings.HasPrefix(openmetrics.Text.ContentType(), "text/plain; version=0.0.4"))
}

// TestHistogram ensures that observations land in the bucket of the first
// bound not below them, concurrent observers lose none, and NaN is ignored.
func TestHistogram(t *testing.T) {
	h, err := openmetrics.NewHistogram(1, 2, 4)
	require.NoError(t, err)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for _, v := range []float64{0, 1, 1.5, 2, 3, 4, 100, math.NaN()} {
				for range 1000 {
					h.Observe(v)
				}
			}
		})
	}
	wg.Wait()
	s := h.Snapshot()
	assert.Equal(t, []float64{1, 2, 4}, s.Bounds)
	assert.Equal(t, []uint64{16000, 16000, 16000, 8000}, s.Counts)
	assert.Equal(t, uint64(56000), s.Count())
	assert.InDelta(t, 8000*(0+1+1.5+2+3+4+100), s.Sum, 1e-6)
}

// TestNewHistogramBounds ensures that bounds that are not finite and
// strictly increasing are refused.
func TestNewHistogramBounds(t *testing.T) {
	for _, b := range [][]float64{{2, 1}, {1, 1}, {math.Inf(1)}, {math.NaN()}} {
		_, err := openmetrics.NewHistogram(b...)
		assert.ErrorIs(t, err, openmetrics.ErrBadBounds, "%v", b)
	}
	h, err := openmetrics.NewHistogram()
	require.NoError(t, err)
	h.Observe(3)
	assert.Equal(t, []uint64{1}, h.Snapshot().Counts)
}

// BenchmarkObserve measures one observation, the cost a publish pays.
func BenchmarkObserve(b *testing.B) {
	h, _ := openmetrics.NewHistogram(0.01, 0.1, 1, 10)
	for b.Loop() {
		h.Observe(0.05)
	}
}
