package agent

import (
	"encoding"
	"fmt"
	"reflect"
	"strings"

	"github.com/pelletier/go-toml/v2/unstable"
)

// checkTypes compares the kind of every value in the document with the Go
// type of the configuration field it sets, before decoding, so that a value
// of the wrong type (duration = 3600, allow_uids = "0") is reported with its
// file, line and key and in TOML's words ("an integer", "an array of
// integers") rather than without a line and in Go's ("[]int"). Keys that are
// not fields are left to the decoder's strict mode, which names them.
func checkTypes(name string, b []byte) []*FieldError {
	var p unstable.Parser
	p.Reset(b)
	root := reflect.TypeFor[Config]()
	var table []string
	var errs []*FieldError
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			table, _ = keyParts(e.Key())
		case unstable.KeyValue:
			key, first := keyParts(e.Key())
			parts := append(append([]string{}, table...), key...)
			t, ok := fieldType(root, parts)
			if !ok {
				continue
			}
			v := e.Value()
			if want, ok := kindMatches(t, v); !ok {
				errs = append(errs, &FieldError{File: name, Line: p.Shape(first.Raw).Start.Line, Key: strings.Join(parts, "."),
					Issue: fmt.Sprintf("is %s; want %s", tomlKind(v), want)})
			}
		}
	}
	return errs
}

// keyParts returns a key's parts and its first node, which has its line.
func keyParts(it unstable.Iterator) ([]string, *unstable.Node) {
	var parts []string
	var first *unstable.Node
	for it.Next() {
		if first == nil {
			first = it.Node()
		}
		parts = append(parts, string(it.Node().Data))
	}
	return parts, first
}

// fieldType follows parts through the toml tags from t; an array of tables
// ([[role]]) stands for its element.
func fieldType(t reflect.Type, parts []string) (reflect.Type, bool) {
	for _, part := range parts {
		for t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct {
			return nil, false
		}
		found := false
		for i := range t.NumField() {
			f := t.Field(i)
			if tag, _, _ := strings.Cut(f.Tag.Get("toml"), ","); tag == part {
				t, found = f.Type, true
				break
			}
		}
		if !found {
			return nil, false
		}
	}
	return t, true
}

var textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()

// kindMatches reports whether v can set a field of type t, and if not, what
// t wants, in TOML's words.
func kindMatches(t reflect.Type, v *unstable.Node) (string, bool) {
	if t == reflect.TypeFor[Duration]() {
		return `a duration string such as "90s", "15m" or "1h"`, v.Kind == unstable.String
	}
	if t.Kind() == reflect.Pointer {
		return kindMatches(t.Elem(), v)
	}
	if reflect.PointerTo(t).Implements(textUnmarshaler) {
		return "a string", v.Kind == unstable.String
	}
	switch t.Kind() {
	case reflect.String:
		return "a string", v.Kind == unstable.String
	case reflect.Bool:
		return "true or false", v.Kind == unstable.Bool
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer", v.Kind == unstable.Integer
	case reflect.Float32, reflect.Float64:
		return "a number", v.Kind == unstable.Float || v.Kind == unstable.Integer
	case reflect.Slice:
		elemWant, _ := kindMatches(t.Elem(), &unstable.Node{})
		want := "an array of " + plural(elemWant)
		if v.Kind != unstable.Array {
			return want, false
		}
		it := v.Children()
		for it.Next() {
			if _, ok := kindMatches(t.Elem(), it.Node()); !ok {
				return want, false
			}
		}
		return want, true
	case reflect.Map, reflect.Struct:
		return "a table", v.Kind == unstable.InlineTable
	}
	return "", true
}

// plural turns "a string" into "strings", "an integer" into "integers".
func plural(s string) string {
	s = strings.TrimPrefix(strings.TrimPrefix(s, "an "), "a ")
	switch s {
	case "true or false":
		return "booleans"
	case "":
		return "values"
	}
	return s + "s"
}

// tomlKind names a value's kind as TOML does.
func tomlKind(v *unstable.Node) string {
	switch v.Kind {
	case unstable.String:
		return "a string"
	case unstable.Integer:
		return "an integer"
	case unstable.Float:
		return "a float"
	case unstable.Bool:
		return "a boolean"
	case unstable.Array:
		return "an array"
	case unstable.InlineTable:
		return "an inline table"
	case unstable.DateTime, unstable.LocalDateTime, unstable.LocalDate, unstable.LocalTime:
		return "a date or time"
	}
	return "a " + v.Kind.String()
}
