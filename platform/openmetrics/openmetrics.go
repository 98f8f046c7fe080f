// Package openmetrics writes metrics in the Prometheus text exposition
// format (version 0.0.4) and in the OpenMetrics 1.0 text format, and holds
// a lock-free Histogram for the packages that measure latencies.
//
// It is the part of the Prometheus client libraries that a process exposing
// a few dozen series needs, without their size: github.com/prometheus/common's
// expfmt alone adds 1.6 MB (protobuf) to tether's static arm64 binary, this
// package a few kilobytes (docs/metrics.md has the measurement). The packages
// that own a thing count it with atomics and expose a snapshot; the program
// reads the snapshots at scrape time and writes them here with an Encoder.
//
// An Encoder checks what the formats require — metric and label names,
// unit suffixes, one TYPE per family, a +Inf bucket, escaping — and records
// the first mistake as an error instead of writing output a scraper would
// reject.
package openmetrics

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Format is one of the two text formats.
type Format int

const (
	// Text is the Prometheus text format 0.0.4, what every Prometheus
	// version and the node_exporter textfile collector read.
	Text Format = iota
	// OpenMetrics is the OpenMetrics 1.0.0 text format.
	OpenMetrics
)

// Content types of the two formats.
const (
	TextContentType        = "text/plain; version=0.0.4; charset=utf-8"
	OpenMetricsContentType = "application/openmetrics-text; version=1.0.0; charset=utf-8"
)

// ContentType returns the Content-Type header of an answer in f.
func (f Format) ContentType() string {
	if f == OpenMetrics {
		return OpenMetricsContentType
	}
	return TextContentType
}

// Negotiate picks the format for an HTTP Accept header: OpenMetrics when
// the client accepts application/openmetrics-text (version 1.0.0 or no
// version) at least as much as plain text, else Text. A client that names
// neither (curl, a browser, no header) gets Text, which every scraper reads.
func Negotiate(accept string) Format {
	omQ, textQ := 0.0, 0.0
	for part := range strings.SplitSeq(accept, ",") {
		media, params, _ := strings.Cut(part, ";")
		media = strings.ToLower(strings.TrimSpace(media))
		q, version := 1.0, ""
		for p := range strings.SplitSeq(params, ";") {
			k, v, _ := strings.Cut(p, "=")
			v = strings.Trim(strings.TrimSpace(v), `"`)
			switch strings.ToLower(strings.TrimSpace(k)) {
			case "q":
				if f, err := strconv.ParseFloat(v, 64); err == nil && f >= 0 && f <= 1 {
					q = f
				}
			case "version":
				version = v
			}
		}
		switch media {
		case "application/openmetrics-text":
			if version == "" || version == "1.0.0" {
				omQ = max(omQ, q)
			}
		case "text/plain", "text/*", "*/*":
			textQ = max(textQ, q)
		}
	}
	if omQ > 0 && omQ >= textQ {
		return OpenMetrics
	}
	return Text
}

// Type is a metric family's type.
type Type int

const (
	// TypeGauge is a value that goes up and down.
	TypeGauge Type = iota
	// TypeCounter only goes up (it restarts from 0 with the process); its
	// sample is written as NAME_total.
	TypeCounter
	// TypeHistogram counts observations in buckets (Encoder.Histogram).
	TypeHistogram
	// TypeInfo is a set of labels with the value 1, e.g. a version; its sample
	// is written as NAME_info (a gauge in the Text format).
	TypeInfo
)

func (t Type) String() string {
	switch t {
	case TypeGauge:
		return "gauge"
	case TypeCounter:
		return "counter"
	case TypeHistogram:
		return "histogram"
	case TypeInfo:
		return "info"
	}
	return "unknown"
}

// Family describes a metric family: what its TYPE, UNIT and HELP lines say.
type Family struct {
	// Name is the family's name without the type's suffix (_total, _info):
	// [a-zA-Z_:][a-zA-Z0-9_:]*. With a Unit it must end in "_" + Unit.
	Name string
	Type Type
	// Unit, e.g. "seconds" or "bytes", or empty.
	Unit string
	// Help is one line for humans.
	Help string
}

// Label is one label of a sample.
type Label struct {
	Name, Value string
}

// Encoder writes metric families into a buffer in one Format. Call Begin
// for each family, then Sample or Histogram for each of its series, then
// Bytes. It is not safe for concurrent use.
type Encoder struct {
	f    Format
	buf  []byte
	fam  Family
	open bool
	seen map[string]bool
	err  error
}

// NewEncoder returns an Encoder writing f.
func NewEncoder(f Format) *Encoder {
	return &Encoder{f: f, seen: make(map[string]bool)}
}

// Begin starts a family and writes its metadata. A family with no
// samples is valid in both formats.
func (e *Encoder) Begin(f Family) {
	if e.err != nil {
		return
	}
	switch {
	case !validMetricName(f.Name):
		e.fail("metric name %q is not [a-zA-Z_:][a-zA-Z0-9_:]*", f.Name)
		return
	case f.Type < TypeGauge || f.Type > TypeInfo:
		e.fail("metric %s: unknown type %d", f.Name, int(f.Type))
		return
	case f.Unit != "" && (f.Type == TypeInfo || !strings.HasSuffix(f.Name, "_"+f.Unit) || !validLabelName(f.Unit)):
		e.fail("metric %s: unit %q must be a name the family's name ends with, and info families have none", f.Name, f.Unit)
		return
	case f.Type == TypeCounter && strings.HasSuffix(f.Name, "_total"), f.Type == TypeInfo && strings.HasSuffix(f.Name, "_info"):
		e.fail("metric %s: name the family without the %s suffix; the encoder adds it", f.Name, suffix(f.Type))
		return
	}
	// Every name a family's samples use must be its own (OpenMetrics
	// forbids a family "x" beside a gauge "x_total").
	for _, s := range sampleSuffixes(f.Type) {
		if e.seen[f.Name+s] {
			e.fail("metric %s: the name %s is already used", f.Name, f.Name+s)
			return
		}
	}
	for _, s := range sampleSuffixes(f.Type) {
		e.seen[f.Name+s] = true
	}
	e.seen[f.Name] = true
	e.fam, e.open = f, true

	// Text names the family as its samples (x_total, x_info); OpenMetrics
	// by its own name.
	name, typ := f.Name, f.Type.String()
	if e.f == Text {
		name += suffix(f.Type)
		if f.Type == TypeInfo {
			typ = "gauge"
		}
	}
	e.buf = append(e.buf, "# TYPE "...)
	e.buf = append(e.buf, name...)
	e.buf = append(e.buf, ' ')
	e.buf = append(e.buf, typ...)
	e.buf = append(e.buf, '\n')
	if f.Unit != "" && e.f == OpenMetrics {
		e.buf = append(e.buf, "# UNIT "...)
		e.buf = append(e.buf, name...)
		e.buf = append(e.buf, ' ')
		e.buf = append(e.buf, f.Unit...)
		e.buf = append(e.buf, '\n')
	}
	if f.Help != "" {
		e.buf = append(e.buf, "# HELP "...)
		e.buf = append(e.buf, name...)
		e.buf = append(e.buf, ' ')
		e.buf = e.escape(e.buf, f.Help, e.f == OpenMetrics)
		e.buf = append(e.buf, '\n')
	}
}

// Sample writes one series of the current gauge, counter or info family.
// A counter's value must not be negative, an info's must be 1.
func (e *Encoder) Sample(v float64, labels ...Label) {
	if !e.check(labels) {
		return
	}
	switch {
	case e.fam.Type == TypeHistogram:
		e.fail("metric %s: a histogram's series are written with Histogram", e.fam.Name)
		return
	case e.fam.Type == TypeCounter && !(v >= 0):
		e.fail("metric %s: a counter cannot be %v", e.fam.Name, v)
		return
	case e.fam.Type == TypeInfo && v != 1:
		e.fail("metric %s: an info's value is 1", e.fam.Name)
		return
	}
	e.line(suffix(e.fam.Type), labels, Label{}, v)
}

// Histogram writes one series of the current histogram family: its
// cumulative buckets, up to +Inf, then _count and _sum.
func (e *Encoder) Histogram(h HistogramSnapshot, labels ...Label) {
	if !e.check(labels) {
		return
	}
	if e.fam.Type != TypeHistogram {
		e.fail("metric %s: Histogram on a %s", e.fam.Name, e.fam.Type)
		return
	}
	for _, l := range labels {
		if l.Name == "le" {
			e.fail("metric %s: a histogram's series cannot have a label le", e.fam.Name)
			return
		}
	}
	if len(h.Counts) != len(h.Bounds)+1 {
		e.fail("metric %s: %d counts for %d bounds (one more is the +Inf bucket)", e.fam.Name, len(h.Counts), len(h.Bounds))
		return
	}
	var cum uint64
	for i, c := range h.Counts {
		cum += c
		le := math.Inf(1)
		if i < len(h.Bounds) {
			le = h.Bounds[i]
		}
		e.line("_bucket", labels, Label{Name: "le", Value: e.leValue(le)}, float64(cum))
	}
	e.line("_count", labels, Label{}, float64(cum))
	e.line("_sum", labels, Label{}, h.Sum)
}

// Bytes ends the exposition (OpenMetrics: "# EOF") and returns it, or the
// first mistake the Encoder met.
func (e *Encoder) Bytes() ([]byte, error) {
	if e.err != nil {
		return nil, e.err
	}
	if e.f == OpenMetrics {
		return append(e.buf, "# EOF\n"...), nil
	}
	return e.buf, nil
}

func (e *Encoder) fail(format string, args ...any) {
	if e.err == nil {
		e.err = fmt.Errorf("openmetrics: "+format, args...)
	}
}

// check reports whether a series with labels may be written now.
func (e *Encoder) check(labels []Label) bool {
	if e.err != nil {
		return false
	}
	if !e.open {
		e.fail("a sample before any Begin")
		return false
	}
	for i, l := range labels {
		if !validLabelName(l.Name) || strings.HasPrefix(l.Name, "__") {
			e.fail("metric %s: label name %q is not [a-zA-Z_][a-zA-Z0-9_]* (and not reserved __)", e.fam.Name, l.Name)
			return false
		}
		for _, m := range labels[:i] {
			if m.Name == l.Name {
				e.fail("metric %s: label %s twice", e.fam.Name, l.Name)
				return false
			}
		}
	}
	return true
}

// line writes NAME+sfx{labels,extra} v.
func (e *Encoder) line(sfx string, labels []Label, extra Label, v float64) {
	e.buf = append(e.buf, e.fam.Name...)
	e.buf = append(e.buf, sfx...)
	if len(labels) > 0 || extra.Name != "" {
		e.buf = append(e.buf, '{')
		for i, l := range labels {
			if i > 0 {
				e.buf = append(e.buf, ',')
			}
			e.buf = e.label(e.buf, l)
		}
		if extra.Name != "" {
			if len(labels) > 0 {
				e.buf = append(e.buf, ',')
			}
			e.buf = e.label(e.buf, extra)
		}
		e.buf = append(e.buf, '}')
	}
	e.buf = append(e.buf, ' ')
	e.buf = appendValue(e.buf, v)
	e.buf = append(e.buf, '\n')
}

func (e *Encoder) label(b []byte, l Label) []byte {
	b = append(b, l.Name...)
	b = append(b, '=', '"')
	b = e.escape(b, l.Value, true)
	return append(b, '"')
}

// escape appends s with backslash, line feed and (when quote) double quote
// escaped, as label values (both formats) and OpenMetrics HELP need; the
// Text format's HELP escapes only the first two. Invalid UTF-8 becomes
// U+FFFD, since both formats are UTF-8.
func (e *Encoder) escape(b []byte, s string, quote bool) []byte {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\':
			b = append(b, `\\`...)
		case c == '\n':
			b = append(b, `\n`...)
		case c == '"' && quote:
			b = append(b, `\"`...)
		default:
			b = append(b, c)
		}
	}
	return b
}

// leValue formats a bucket bound. OpenMetrics wants bounds in one canonical
// form, so that le="1" and le="1.0" are not two series: Go's shortest float
// with ".0" on whole numbers, as the Prometheus clients write them.
func (e *Encoder) leValue(v float64) string {
	s := string(appendFloat(nil, v))
	if e.f == OpenMetrics && !math.IsInf(v, 0) && !strings.ContainsAny(s, ".eN") {
		s += ".0"
	}
	return s
}

// appendValue writes a sample value: whole numbers (counts, bytes,
// timestamps) as integers, others as Go's shortest float.
func appendValue(b []byte, v float64) []byte {
	if v == math.Trunc(v) && math.Abs(v) < 1<<53 {
		return strconv.AppendInt(b, int64(v), 10)
	}
	return appendFloat(b, v)
}

func appendFloat(b []byte, v float64) []byte {
	switch {
	case math.IsInf(v, 1):
		return append(b, "+Inf"...)
	case math.IsInf(v, -1):
		return append(b, "-Inf"...)
	case math.IsNaN(v):
		return append(b, "NaN"...)
	}
	return strconv.AppendFloat(b, v, 'g', -1, 64)
}

func suffix(t Type) string {
	switch t {
	case TypeCounter:
		return "_total"
	case TypeInfo:
		return "_info"
	}
	return ""
}

// sampleSuffixes are the names a family's samples and metadata may use.
func sampleSuffixes(t Type) []string {
	switch t {
	case TypeCounter:
		return []string{"_total", "_created"}
	case TypeHistogram:
		return []string{"_bucket", "_count", "_sum", "_created"}
	case TypeInfo:
		return []string{"_info"}
	}
	return []string{""}
}

func validMetricName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || c == ':' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || i > 0 && '0' <= c && c <= '9') {
			return false
		}
	}
	return s != ""
}

func validLabelName(s string) bool {
	return validMetricName(s) && !strings.Contains(s, ":")
}

// ErrBadBounds is returned by NewHistogram for bounds that are not finite
// and strictly increasing.
var ErrBadBounds = errors.New("openmetrics: histogram bounds must be finite and strictly increasing")
