// Package openmetricstest checks metric expositions with the parsers
// scrapers use — Debian's python3-prometheus-client (its Prometheus text
// and OpenMetrics parsers) and promtool from Debian's prometheus package —
// in the style of net/http/httptest, for tests of any program that exposes
// metrics with package openmetrics.
package openmetricstest

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/tetherd/tether/platform/openmetrics"
)

// Python is the interpreter with python3-prometheus-client (Debian's, not
// one a version manager put first on PATH).
const Python = "/usr/bin/python3"

// Family is one metric family as a parser read it.
type Family struct {
	Name, Type, Unit, Help string
	// Samples maps a sample's name and sorted labels, as Key writes them,
	// to its value.
	Samples map[string]float64
}

// parse reads the exposition on stdin with the parser of the format named
// by argv[1] ("text" or "openmetrics") and prints its families as JSON.
const parse = `
import json, sys
from prometheus_client.parser import text_string_to_metric_families as text
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om
src = sys.stdin.read()
out = []
for f in (om if sys.argv[1] == "openmetrics" else text)(src):
    out.append({"Name": f.name, "Type": f.type, "Unit": f.unit, "Help": f.documentation,
                "Samples": [[s.name, s.labels, repr(float(s.value))] for s in f.samples]})
json.dump(out, sys.stdout)
`

// Parse parses body, written in format f, with the Python client's parser
// for f and, for the Text format, checks it with `promtool check metrics`
// (whose lint rules — counters ending in _total, units in base units, HELP
// on every family — it must pass too). It fails t when either refuses the
// body or a tool is missing, and returns the families by name.
func Parse(t testing.TB, f openmetrics.Format, body []byte) map[string]Family {
	t.Helper()
	name := "text"
	if f == openmetrics.OpenMetrics {
		name = "openmetrics"
	}
	cmd := exec.Command(Python, "-c", parse, name)
	cmd.Stdin = bytes.NewReader(body)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if strings.Contains(stderr.String(), "No module named") {
			t.Fatalf("openmetricstest: %s has no prometheus_client: apt-get install python3-prometheus-client (make deps)", Python)
		}
		t.Fatalf("openmetricstest: the Python %s parser refuses the exposition: %v\n%s\n--- body:\n%s", name, err, stderr.String(), body)
	}
	var raw []struct {
		Name, Type, Unit, Help string
		Samples                [][3]json.RawMessage
	}
	if err := json.Unmarshal(out, &raw); err != nil {
		t.Fatalf("openmetricstest: reading the parser's output: %v", err)
	}
	fams := make(map[string]Family, len(raw))
	for _, r := range raw {
		fam := Family{Name: r.Name, Type: r.Type, Unit: r.Unit, Help: r.Help, Samples: map[string]float64{}}
		for _, s := range r.Samples {
			var sname string
			var labels map[string]string
			var value string
			if json.Unmarshal(s[0], &sname) != nil || json.Unmarshal(s[1], &labels) != nil || json.Unmarshal(s[2], &value) != nil {
				t.Fatalf("openmetricstest: a sample the parser printed is not [name, labels, value]: %s %s %s", s[0], s[1], s[2])
			}
			v, err := strconv.ParseFloat(value, 64)
			if err != nil {
				t.Fatalf("openmetricstest: sample %s: value %q: %v", sname, value, err)
			}
			fam.Samples[Key(sname, labels)] = v
		}
		if _, dup := fams[r.Name]; dup {
			t.Fatalf("openmetricstest: family %s appears twice", r.Name)
		}
		fams[r.Name] = fam
	}
	if f == openmetrics.Text {
		Promtool(t, body)
	}
	return fams
}

// Promtool runs `promtool check metrics` on a Prometheus text exposition
// and fails t on any problem it reports.
func Promtool(t testing.TB, body []byte) {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("openmetricstest: promtool missing: apt-get install prometheus (make deps)")
	}
	cmd := exec.Command(path, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("openmetricstest: promtool check metrics: %v\n%s\n--- body:\n%s", err, out, body)
	}
}

// Key names a sample: name{a="1",b="2"} with the labels sorted, or name.
func Key(name string, labels map[string]string) string {
	if len(labels) == 0 {
		return name
	}
	names := make([]string, 0, len(labels))
	for n := range labels {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString(name)
	b.WriteByte('{')
	for i, n := range names {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(n + "=" + `"` + labels[n] + `"`)
	}
	b.WriteByte('}')
	return b.String()
}

// Value finds one sample in the families Parse returned and fails t when
// it is absent.
func Value(t testing.TB, fams map[string]Family, family, sample string) float64 {
	t.Helper()
	f, ok := fams[family]
	if !ok {
		t.Fatalf("openmetricstest: no family %s", family)
	}
	v, ok := f.Samples[sample]
	if !ok {
		keys := make([]string, 0, len(f.Samples))
		for k := range f.Samples {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		t.Fatalf("openmetricstest: family %s has no sample %s; it has %s", family, sample, strings.Join(keys, " "))
	}
	return v
}
