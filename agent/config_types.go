package agent

import (
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// Duration is a time.Duration written as a Go duration string ("15m", "1h").
type Duration struct {
	time.Duration
	set bool
}

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration; write it like \"90s\", \"15m\" or \"1h\"", b)
	}
	d.Duration, d.set = v, true
	return nil
}

// MarshalText writes the duration back as a Go duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// IsSet reports whether the file gave the duration (rather than a default).
func (d Duration) IsSet() bool { return d.set }

func (d *Duration) orDefault(v time.Duration) {
	if !d.set {
		d.Duration = v
	}
}

// SourceKind says where a role's source credentials come from.
type SourceKind int

// The kinds of Source.
const (
	// SourceDevice is the device role (the IoT role alias): the default.
	SourceDevice SourceKind = iota
	// SourceRole is another [[role]], named by Source.Name (a chain).
	SourceRole
	// SourceProfile is a profile of the SDK's shared configuration files.
	SourceProfile
)

// Source is a role's source setting: "device", "role:NAME" or
// "profile:NAME", parsed once when the file is read.
type Source struct {
	Kind SourceKind
	// Name is the role or profile; empty for SourceDevice.
	Name string
}

// UnmarshalText parses "device", "role:NAME" or "profile:NAME"; an empty
// value is the default, "device".
func (s *Source) UnmarshalText(b []byte) error {
	text := string(b)
	if text == DeviceRole || text == "" {
		*s = Source{Kind: SourceDevice}
		return nil
	}
	if name, ok := strings.CutPrefix(text, "role:"); ok && name != "" {
		*s = Source{Kind: SourceRole, Name: name}
		return nil
	}
	if name, ok := strings.CutPrefix(text, "profile:"); ok && name != "" {
		*s = Source{Kind: SourceProfile, Name: name}
		return nil
	}
	return fmt.Errorf("%q is not a source; use \"device\", \"role:NAME\" or \"profile:NAME\"", b)
}

// MarshalText writes the source as the configuration spells it.
func (s Source) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// String returns the source as the configuration spells it.
func (s Source) String() string {
	switch s.Kind {
	case SourceRole:
		return "role:" + s.Name
	case SourceProfile:
		return "profile:" + s.Name
	}
	return DeviceRole
}

// Chained reports whether the source's credentials are a role's, so a
// role assumed with them is capped at AWS's role-chaining limit of 1h.
func (s Source) Chained() bool { return s.Kind != SourceProfile }

// LogLevel is log.level: debug, info, warn or error.
type LogLevel struct {
	slog.Level
}

// UnmarshalText accepts the four level names, in lower case; an empty value
// is the default, info.
func (l *LogLevel) UnmarshalText(b []byte) error {
	switch string(b) {
	case "debug":
		l.Level = slog.LevelDebug
	case "info", "":
		l.Level = slog.LevelInfo
	case "warn":
		l.Level = slog.LevelWarn
	case "error":
		l.Level = slog.LevelError
	default:
		return fmt.Errorf("%q is not a level; use debug, info, warn or error", b)
	}
	return nil
}

// MarshalText writes the level as the configuration spells it.
func (l LogLevel) MarshalText() ([]byte, error) {
	return []byte(strings.ToLower(l.Level.String())), nil
}
