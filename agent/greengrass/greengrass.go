// Package greengrass reads the configuration of an AWS IoT Greengrass core
// device — nucleus classic's effectiveConfig.yaml or nucleus lite's
// config.yaml — and writes the tether configuration that uses the same
// identity: certificate, private key (a file or a PKCS#11 token), thing name,
// credentials endpoint, role alias, data endpoint and root CA.
//
// Both nuclei share one layout, documented in the Greengrass developer guide
// ("Install with manual resource provisioning", "Hardware security
// integration") and in nucleus lite's docs/examples/sample_nucleus_config.yaml:
//
//	system:
//	  certificateFilePath: /greengrass/v2/device.pem.crt
//	  privateKeyPath:      /greengrass/v2/private.pem.key   # or a pkcs11: URI
//	  rootCaPath:          /greengrass/v2/AmazonRootCA1.pem
//	  rootpath:            /greengrass/v2                    # lite: rootPath
//	  thingName:           MyGreengrassCore
//	services:
//	  aws.greengrass.Nucleus:                                # lite: aws.greengrass.NucleusLite
//	    configuration:
//	      awsRegion, iotCredEndpoint, iotDataEndpoint, iotRoleAlias, mqtt: {port}
//	  aws.greengrass.crypto.Pkcs11Provider:                  # classic with an HSM
//	    configuration: {name, library, slot, userPin}
package greengrass

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/tetherd/tether/hsm"
)

// Nucleus is the Greengrass edition a configuration belongs to.
type Nucleus string

// The two nuclei, named by their component.
const (
	Classic Nucleus = "aws.greengrass.Nucleus"
	Lite    Nucleus = "aws.greengrass.NucleusLite"
)

const pkcs11Provider = "aws.greengrass.crypto.Pkcs11Provider"

// Device is what a Greengrass configuration says about the device identity.
type Device struct {
	File    string
	Nucleus Nucleus

	ThingName string
	// Certificate, PrivateKey and RootCA are absolute paths (relative ones
	// are resolved against the Greengrass root path) or pkcs11: URIs.
	Certificate, PrivateKey, RootCA string

	Region, CredentialEndpoint, RoleAlias, DataEndpoint string
	// MQTTPort is nucleus classic's mqtt.port; 0 when not set.
	MQTTPort int

	// PKCS11 is classic's aws.greengrass.crypto.Pkcs11Provider, when configured.
	PKCS11 *PKCS11Provider
}

// PKCS11Provider is the configuration of Greengrass's PKCS#11 provider plugin.
type PKCS11Provider struct {
	Library string
	Slot    int
	HasSlot bool
	// UserPIN is a secret: it is never printed.
	UserPIN string
}

// Error is a Greengrass configuration that cannot be imported, naming the
// file and the key at fault.
type Error struct {
	File  string
	Line  int
	Key   string
	Issue string
}

func (e *Error) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc = fmt.Sprintf("%s:%d", e.File, e.Line)
	}
	if e.Key == "" {
		return loc + ": " + e.Issue
	}
	return fmt.Sprintf("%s: %s: %s", loc, e.Key, e.Issue)
}

// Parse reads a Greengrass configuration. A file that is not YAML, or that
// lacks a key tether needs, gets an *Error naming the first such key.
func Parse(file string, b []byte) (*Device, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, &Error{File: file, Issue: "not valid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ") + "; pass Greengrass's effectiveConfig.yaml (classic) or config.yaml (lite)"}
	}
	p := &parser{file: file}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if root.Kind != yaml.MappingNode {
		return nil, &Error{File: file, Issue: "is not a Greengrass configuration (a YAML mapping with system: and services:)"}
	}
	sys := p.mapping(root, "system")
	svcs := p.mapping(root, "services")
	if p.err != nil {
		return nil, p.err
	}
	d := &Device{File: file}
	nucleus := p.child(svcs, string(Classic))
	d.Nucleus = Classic
	if nucleus == nil {
		if nucleus = p.child(svcs, string(Lite)); nucleus != nil {
			d.Nucleus = Lite
		}
	}
	if nucleus == nil {
		return nil, &Error{File: file, Line: svcs.Line, Key: "services." + string(Classic),
			Issue: "missing (and no services." + string(Lite) + "); this is not a Greengrass nucleus configuration"}
	}
	nkey := "services." + string(d.Nucleus)
	conf := p.mapping(nucleus, "configuration")
	if p.err != nil {
		p.err.Key = nkey + ".configuration"
		return nil, p.err
	}

	d.ThingName = p.str(sys, "system", "thingName", true)
	root1 := p.str(sys, "system", "rootpath", false)
	if root1 == "" {
		root1 = p.str(sys, "system", "rootPath", false)
	}
	d.Certificate = p.path(sys, "system", "certificateFilePath", root1)
	d.PrivateKey = p.path(sys, "system", "privateKeyPath", root1)
	d.RootCA = p.path(sys, "system", "rootCaPath", root1)
	d.Region = p.str(conf, nkey+".configuration", "awsRegion", true)
	d.CredentialEndpoint = p.str(conf, nkey+".configuration", "iotCredEndpoint", true)
	d.RoleAlias = p.str(conf, nkey+".configuration", "iotRoleAlias", true)
	d.DataEndpoint = p.str(conf, nkey+".configuration", "iotDataEndpoint", false)
	if mq := p.child(conf, "mqtt"); mq != nil && mq.Kind == yaml.MappingNode {
		if port := p.str(mq, nkey+".configuration.mqtt", "port", false); port != "" {
			n, err := strconv.Atoi(port)
			if err != nil || n < 1 || n > 65535 {
				p.fail(mq, nkey+".configuration.mqtt.port", fmt.Sprintf("%q is not a port number", port))
			}
			d.MQTTPort = n
		}
	}
	if prov := p.child(svcs, pkcs11Provider); prov != nil {
		key := "services." + pkcs11Provider + ".configuration"
		pc := p.mapping(prov, "configuration")
		if p.err == nil {
			d.PKCS11 = &PKCS11Provider{
				Library: p.str(pc, key, "library", true),
				UserPIN: p.str(pc, key, "userPin", false),
			}
			if slot := p.str(pc, key, "slot", false); slot != "" {
				n, err := strconv.Atoi(slot)
				if err != nil || n < 0 {
					p.fail(pc, key+".slot", fmt.Sprintf("%q is not a slot id", slot))
				}
				d.PKCS11.Slot, d.PKCS11.HasSlot = n, true
			}
		}
	}
	if p.err != nil {
		return nil, p.err
	}
	return d, nil
}

// parser walks the YAML tree and keeps the first error.
type parser struct {
	file string
	err  *Error
}

func (p *parser) fail(n *yaml.Node, key, issue string) {
	if p.err == nil {
		line := 0
		if n != nil {
			line = n.Line
		}
		p.err = &Error{File: p.file, Line: line, Key: key, Issue: issue}
	}
}

// child returns the value of key in mapping m, or nil.
func (p *parser) child(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// mapping returns the mapping at key, failing when it is absent or not a mapping.
func (p *parser) mapping(m *yaml.Node, key string) *yaml.Node {
	c := p.child(m, key)
	switch {
	case p.err != nil:
		return nil
	case c == nil:
		p.fail(m, key, "missing; this is not a complete Greengrass configuration")
	case c.Kind != yaml.MappingNode:
		p.fail(c, key, "is not a mapping")
	}
	return c
}

// str returns the scalar at parent.key; required ones must be set and not
// left as a "<CONFIGURE_THIS>" placeholder.
func (p *parser) str(m *yaml.Node, parent, key string, required bool) string {
	if p.err != nil {
		return ""
	}
	full := parent + "." + key
	c := p.child(m, key)
	if c == nil || c.Tag == "!!null" {
		if required {
			p.fail(m, full, "missing; tether needs it to use the same identity")
		}
		return ""
	}
	if c.Kind != yaml.ScalarNode {
		p.fail(c, full, "is not a single value")
		return ""
	}
	v := strings.TrimSpace(c.Value)
	switch {
	case v == "" && required:
		p.fail(c, full, "is empty; tether needs it to use the same identity")
	case strings.HasPrefix(v, "<") && strings.HasSuffix(v, ">"):
		p.fail(c, full, fmt.Sprintf("is still the placeholder %s; set it in Greengrass's configuration first", v))
		return ""
	}
	return v
}

// path returns a required file path (or pkcs11: URI), resolved against the
// Greengrass root path when relative.
func (p *parser) path(m *yaml.Node, parent, key, root string) string {
	v := p.str(m, parent, key, true)
	v = strings.TrimPrefix(v, "file://")
	if v == "" || hsm.IsURI(v) || filepath.IsAbs(v) {
		return v
	}
	if root == "" {
		p.fail(p.child(m, key), parent+"."+key, fmt.Sprintf("%q is relative and the file has no system.rootpath to resolve it against", v))
		return ""
	}
	return filepath.Join(root, v)
}

// Options are what a Greengrass configuration cannot say.
type Options struct {
	// PINFile is where tether reads the token PIN (pin-source=file:PATH);
	// default /etc/tether/pin. Greengrass keeps the PIN in its configuration
	// (userPin, or pin-value in the URI); tether never prints it.
	PINFile string
	// PKCS11Module is the module for a nucleus lite pkcs11: key, which takes
	// its module from OpenSSL's pkcs11-provider configuration instead.
	PKCS11Module string
	// Certificate replaces a certificateFilePath that is a pkcs11: URI:
	// tether reads the certificate from a file.
	Certificate string
}

// DefaultPINFile is where an imported PKCS#11 key's PIN is read from.
const DefaultPINFile = "/etc/tether/pin"

// privateKey returns tether's private_key for the device: the PEM path, or a
// pkcs11: URI with the module and a pin-source file; pin is the PIN the
// Greengrass file holds, "" if none, for the caller to store, never to print.
func (d *Device) privateKey(o Options) (key, pin string, err error) {
	if !hsm.IsURI(d.PrivateKey) {
		return d.PrivateKey, "", nil
	}
	u, err := hsm.ParseURI(queryPIN(d.PrivateKey))
	if err != nil {
		return "", "", &Error{File: d.File, Key: "system.privateKeyPath", Issue: err.Error()}
	}
	explicitModule := strings.Contains(d.PrivateKey, "module-path=")
	switch {
	case o.PKCS11Module != "":
		u.ModulePath = o.PKCS11Module
	case d.PKCS11 != nil:
		u.ModulePath = d.PKCS11.Library
	case !explicitModule:
		return "", "", &Error{File: d.File, Key: "system.privateKeyPath",
			Issue: fmt.Sprintf("is a pkcs11: URI but the file names no PKCS#11 module (nucleus lite takes it from OpenSSL's pkcs11-module-path); pass --pkcs11-module PATH")}
	}
	if d.PKCS11 != nil && d.PKCS11.HasSlot && u.Token == "" && u.Serial == "" && !u.HasSlotID {
		u.SlotID, u.HasSlotID = uint(d.PKCS11.Slot), true
	}
	pin = u.PINValue
	if d.PKCS11 != nil && d.PKCS11.UserPIN != "" {
		pin = d.PKCS11.UserPIN
	}
	u.PINValue = ""
	if u.PINSource == "" {
		f := o.PINFile
		if f == "" {
			f = DefaultPINFile
		}
		u.PINSource = "file:" + f
	}
	return u.String(), pin, nil
}

// queryPIN moves a pin-value written among the path attributes — as nucleus
// lite's documentation does, and OpenSSL's pkcs11-provider accepts — to the
// query, where RFC 7512 puts it.
func queryPIN(uri string) string {
	path, query, _ := strings.Cut(strings.TrimPrefix(uri, "pkcs11:"), "?")
	var keep, moved []string
	for _, attr := range strings.Split(path, ";") {
		if strings.HasPrefix(attr, "pin-value=") {
			moved = append(moved, attr)
		} else if attr != "" {
			keep = append(keep, attr)
		}
	}
	if query != "" {
		moved = append(moved, query)
	}
	out := "pkcs11:" + strings.Join(keep, ";")
	if len(moved) > 0 {
		out += "?" + strings.Join(moved, "&")
	}
	return out
}

// Import is the tether configuration of a device, with the PIN (if the
// Greengrass file holds one) kept apart from the printable text.
type Import struct {
	// TOML is the configuration, ready for /etc/tether/tether.toml.
	TOML []byte
	// PIN is the token PIN found in the Greengrass file, for PINFile; never print it.
	PIN     string
	PINFile string
}

// Config writes the tether configuration for d.
func (d *Device) Config(o Options) (*Import, error) {
	cert := d.Certificate
	if hsm.IsURI(cert) {
		if o.Certificate == "" {
			return nil, &Error{File: d.File, Key: "system.certificateFilePath",
				Issue: fmt.Sprintf("is a pkcs11: URI; tether reads the certificate from a file: export it (p11tool --export %q > /etc/tether/device.crt) and pass --certificate FILE", cert)}
		}
		cert = o.Certificate
	}
	key, pin, err := d.privateKey(o)
	if err != nil {
		return nil, err
	}
	im := &Import{PIN: pin}
	if hsm.IsURI(key) {
		u, _ := hsm.ParseURI(key)
		im.PINFile, _ = strings.CutPrefix(u.PINSource, "file:")
	}

	var b bytes.Buffer
	fmt.Fprintf(&b, "# tether configuration imported from %s (Greengrass %s).\n", d.File, d.Nucleus)
	b.WriteString("# Same identity as Greengrass; check it with: tether config check -c FILE\n\n")
	b.WriteString("[identity]\n")
	kv(&b, "thing_name", d.ThingName, "")
	kv(&b, "certificate", cert, "")
	kv(&b, "private_key", key, "")
	b.WriteString("\n[aws]\n")
	kv(&b, "region", d.Region, "")
	kv(&b, "credential_endpoint", d.CredentialEndpoint, "")
	kv(&b, "role_alias", d.RoleAlias, "Greengrass's token exchange role alias")
	kv(&b, "ca_file", d.RootCA, "")
	// [serve] and [state] are left to the defaults (and to whoever deploys
	// tether: the Greengrass component appends its own), so they are comments.
	b.WriteString("\n# [serve]\n")
	b.WriteString("# For Greengrass components: AWS_CONTAINER_CREDENTIALS_FULL_URI=http://127.0.0.1:2020/2016-11-01/credentialprovider/\n")
	b.WriteString("# container_endpoint = \"127.0.0.1:2020\"\n")
	if d.DataEndpoint != "" {
		b.WriteString("\n[mqtt]\n")
		kv(&b, "endpoint", d.DataEndpoint, "")
		if d.MQTTPort != 0 {
			fmt.Fprintf(&b, "port     = %d\n", d.MQTTPort)
		}
		kv(&b, "ca_file", d.RootCA, "")
		b.WriteString("# client_id defaults to THING-tether beside Greengrass, which connects as the thing name\n")
	}
	b.WriteString("\n[greengrass]\n")
	kv(&b, "config", d.File, "Greengrass runs on this device too")
	im.TOML = b.Bytes()
	return im, nil
}

// kv writes key = "value" as a TOML basic string, with an optional comment.
func kv(b *bytes.Buffer, key, value, comment string) {
	fmt.Fprintf(b, "%-8s = %s", key, tomlString(value))
	if comment != "" {
		b.WriteString("  # " + comment)
	}
	b.WriteByte('\n')
}

// tomlString quotes s as a TOML basic string.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, "\\u%04X", r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
