package agent

import (
	"path/filepath"
	"time"

	"github.com/tetherd/tether/mqtt"
	"github.com/tetherd/tether/platform"
)

// directories systemd made for the unit ($STATE_DIRECTORY,
// $RUNTIME_DIRECTORY) when it runs tether.
func (c *Config) applyDefaults(dirs platform.Dirs) {
	a := &c.AWS
	a.AdvisoryWindow.orDefault(15 * time.Minute)
	a.MandatoryWindow.orDefault(30 * time.Second)
	if c.Serve.Socket == "" {
		c.Serve.Socket = filepath.Join(dirs.Runtime, "tether.sock")
	}
	if c.Serve.TokenFile == "" {
		c.Serve.TokenFile = filepath.Join(dirs.Runtime, "token")
	}
	m := &c.MQTT
	if m.Port == 0 {
		m.Port = 8883
	}
	if m.ClientID == "" {
		m.ClientID = c.defaultClientID()
	}
	m.KeepAlive.orDefault(mqtt.DefaultKeepAlive)
	m.SessionExpiry.orDefault(24 * time.Hour)
	m.BackoffCap.orDefault(2 * time.Minute)
	if m.OutboxMaxMessages == 0 {
		m.OutboxMaxMessages = 100_000
	}
	if m.OutboxMaxBytes == 0 {
		m.OutboxMaxBytes = 64 << 20
	}
	if c.State.Path == "" {
		c.State.Path = filepath.Join(dirs.State, "state.db")
	}
	for i := range c.Roles {
		r := &c.Roles[i]
		if r.SessionName == "" {
			r.SessionName = "tether-" + c.Identity.ThingName
		}
		r.Duration.orDefault(time.Hour)
		if r.Region == "" {
			r.Region = c.AWS.Region
		}
	}
}
