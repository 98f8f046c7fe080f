package agent

import (
	"fmt"
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
