package agent

import "fmt"

// GreengrassConfig says that AWS IoT Greengrass (nucleus classic or lite)
// runs on the same device, with the same identity; `tether config import
// greengrass` writes it.
type GreengrassConfig struct {
	// Config is the Greengrass configuration the identity was imported from.
	Config string `toml:"config"`
}

// maxClientID is AWS IoT Core's longest MQTT client id.
const maxClientID = 128

// greengrassClientSuffix makes tether's default client id differ from
// Greengrass's: both nuclei connect with the thing name as the client id,
// and AWS IoT Core disconnects the older of two connections that share one.
const greengrassClientSuffix = "-tether"

// defaultClientID is the MQTT client id when [mqtt] client_id is not set: the
// thing name, or THING-tether beside Greengrass.
func (c *Config) defaultClientID() string {
	thing := c.Identity.ThingName
	if c.Greengrass.Config == "" {
		return thing
	}
	if len(thing)+len(greengrassClientSuffix) > maxClientID {
		thing = thing[:maxClientID-len(greengrassClientSuffix)]
	}
	return thing + greengrassClientSuffix
}

// Warnings are things in a valid configuration that will likely go wrong;
// `tether config check` prints them and still succeeds.
func (c *Config) Warnings() []string {
	var w []string
	if c.Greengrass.Config != "" && c.MQTT.Endpoint != "" && c.MQTT.ClientID == c.Identity.ThingName {
		w = append(w, fmt.Sprintf("%s: mqtt.client_id: %q is the thing name, the client id Greengrass (%s) connects with; "+
			"AWS IoT Core drops one of two connections with the same client id, so they would knock each other off: "+
			"remove client_id (default %q) or choose another the device's IoT policy allows",
			c.File, c.MQTT.ClientID, c.Greengrass.Config, c.Identity.ThingName+greengrassClientSuffix))
	}
	return w
}
