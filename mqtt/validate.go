package mqtt

import (
	"errors"
	"fmt"

	"github.com/tetherd/tether/platform/endpoint"
)

// MaxClientIDBytes is the longest client id AWS IoT Core accepts.
const MaxClientIDBytes = 128

// ConfigError is a Config field New refuses, named by its Go name
// ("Config.ClientID"), so that a caller reading the settings from a file of
// its own can name its own key instead, as agent does with TOML keys.
type ConfigError struct {
	Field string
	// Issue says what is wrong and what to do.
	Issue string
}

func (e *ConfigError) Error() string { return "mqtt: " + e.Field + ": " + e.Issue }

// Validate checks what New checks of c before anything connects, except the
// outbox and the certificate (which a configuration check has not opened):
// the endpoint, the port and the client id. Every problem is reported
// (errors.Join of *ConfigError).
func (c Config) Validate() error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, &ConfigError{Field: field, Issue: fmt.Sprintf(format, args...)})
	}
	if c.Endpoint == "" {
		add("Config.Endpoint", "is empty: set the AWS IoT data endpoint (aws iot describe-endpoint --endpoint-type iot:Data-ATS)")
	} else if _, err := endpoint.Parse(c.Endpoint); err != nil {
		add("Config.Endpoint", "%v", err)
	}
	if c.Port < 0 || c.Port > 65535 {
		add("Config.Port", "%d is not a TCP port; use 8883, or 443 (ALPN x-amzn-mqtt-ca)", c.Port)
	}
	switch id := cmpOr(c.ClientID, c.ThingName); {
	case id == "":
		add("Config.ClientID", "no client id: set the client id or the thing name")
	case len(id) > MaxClientIDBytes:
		add("Config.ClientID", "is %d bytes; AWS IoT Core allows at most %d", len(id), MaxClientIDBytes)
	}
	return errors.Join(errs...)
}
