package agent

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	toml "github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// FieldError is one thing wrong in a configuration file.
type FieldError struct {
	File  string
	Line  int // 0 when the key is absent from the file
	Key   string
	Issue string // what is wrong and what to do
}

func (e *FieldError) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc = fmt.Sprintf("%s:%d", e.File, e.Line)
	}
	if e.Key == "" {
		return fmt.Sprintf("%s: %s", loc, e.Issue)
	}
	return fmt.Sprintf("%s: %s: %s", loc, e.Key, e.Issue)
}

// ConfigError holds every error found in a configuration, so one run of
// `tether config check` reports them all.
type ConfigError struct {
	Errors []*FieldError
}

func (e *ConfigError) Error() string {
	lines := make([]string, len(e.Errors))
	for i, fe := range e.Errors {
		lines[i] = fe.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap lets errors.As reach each FieldError.
func (e *ConfigError) Unwrap() []error {
	errs := make([]error, len(e.Errors))
	for i, fe := range e.Errors {
		errs[i] = fe
	}
	return errs
}

func tomlError(name string, err error, lines map[string]int) *FieldError {
	var de *toml.DecodeError
	if errors.As(err, &de) {
		row, _ := de.Position()
		msg := de.Error()
		msg = strings.TrimPrefix(msg, "toml: ")
		return &FieldError{File: name, Line: row, Key: indexedKey(de.Key(), row, lines), Issue: msg}
	}
	var pe *unstable.ParserError
	if errors.As(err, &pe) {
		return &FieldError{File: name, Issue: "not valid TOML: " + pe.Message}
	}
	return &FieldError{File: name, Issue: "not valid TOML: " + err.Error()}
}

// indexedKey names the key of a decoding error as validation names it
// ("role[1].source" rather than the decoder's "role.source"), by finding the
// key of the line map on the error's line.
func indexedKey(key []string, row int, lines map[string]int) string {
	dotted := strings.Join(key, ".")
	if len(key) > 0 {
		for k, line := range lines {
			if line == row && strings.HasSuffix(k, "."+key[len(key)-1]) && strings.HasPrefix(k, key[0]+".") {
				return displayKey(k)
			}
		}
	}
	return dotted
}

func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// keyLines maps every dotted key of the document ("aws.duration",
// "role.1.role_arn") to its line, so validation errors can point at the line
// the operator has to change.
func keyLines(b []byte) (map[string]int, error) {
	lines := map[string]int{}
	var p unstable.Parser
	p.Reset(b)
	var table []string
	arrays := map[string]int{}
	lineOf := func(n *unstable.Node) int {
		return p.Shape(n.Raw).Start.Line
	}
	keyOf := func(it unstable.Iterator) ([]string, *unstable.Node) {
		var parts []string
		var first *unstable.Node
		for it.Next() {
			n := it.Node()
			if first == nil {
				first = n
			}
			parts = append(parts, string(n.Data))
		}
		return parts, first
	}
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table:
			parts, first := keyOf(e.Key())
			table = parts
			if first != nil {
				lines[strings.Join(table, ".")] = lineOf(first)
			}
		case unstable.ArrayTable:
			parts, first := keyOf(e.Key())
			name := strings.Join(parts, ".")
			idx := arrays[name]
			arrays[name] = idx + 1
			table = append(parts, strconv.Itoa(idx))
			if first != nil {
				lines[strings.Join(table, ".")] = lineOf(first)
			}
		case unstable.KeyValue:
			parts, first := keyOf(e.Key())
			if first != nil {
				lines[strings.Join(append(append([]string{}, table...), parts...), ".")] = lineOf(first)
			}
		}
	}
	return lines, p.Error()
}

// validator collects field errors with their lines.
type validator struct {
	file  string
	lines map[string]int
	errs  []*FieldError
}

func (v *validator) fail(key, format string, args ...any) {
	line := v.lines[key]
	if line == 0 {
		// A missing key: point at its section, if the file has one.
		if i := strings.LastIndex(key, "."); i > 0 {
			line = v.lines[key[:i]]
		}
	}
	v.errs = append(v.errs, &FieldError{File: v.file, Line: line, Key: displayKey(key), Issue: fmt.Sprintf(format, args...)})
}

// displayKey turns "role.1.role_arn" into "role[1].role_arn".
func displayKey(key string) string {
	parts := strings.Split(key, ".")
	var out strings.Builder
	for i, p := range parts {
		if _, err := strconv.Atoi(p); err == nil && i > 0 {
			out.WriteString("[" + p + "]")
			continue
		}
		if i > 0 {
			out.WriteByte('.')
		}
		out.WriteString(p)
	}
	return out.String()
}

// applyDefaults fills what the file left out; paths default into the
