package hsm

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/tetherd/tether/platform/secretfile"
)

// DefaultModule is the PKCS#11 module used when a URI names none: SoftHSM2 as
// Debian, Ubuntu, Yocto and Buildroot install it.
const DefaultModule = "/usr/lib/softhsm/libsofthsm2.so"

// URI is a parsed RFC 7512 PKCS#11 URI, restricted to the attributes tether
// uses to address one key in one token.
type URI struct {
	// Token, Serial and SlotID select the token; at most one of them is used
	// (Token wins over Serial, Serial over SlotID). HasSlotID tells whether
	// SlotID was given.
	Token     string
	Serial    string
	SlotID    uint
	HasSlotID bool

	// Object is the CKA_LABEL and ID the CKA_ID (raw bytes) of the key.
	Object string
	ID     []byte

	// Type is the object class asked for ("private", "public", "cert",
	// "secret-key", "data"); empty means any.
	Type string

	// ModulePath is the PKCS#11 shared library (query attribute module-path).
	ModulePath string

	// P11KitRemote and P11KitServer say how the module is reached (query
	// attribute x-p11-kit): P11KitRemote hosts ModulePath in a child
	// `p11-kit remote` process ("x-p11-kit=remote"); P11KitServer is the
	// socket of a running `p11-kit server` ("x-p11-kit=unix:path=PATH" or
	// an absolute PATH), which has loaded the module itself. With neither,
	// cgo builds load the module in-process and static builds use
	// `p11-kit remote`.
	P11KitRemote bool
	P11KitServer string

	// PINSource is where the user PIN comes from: "file:PATH" or
	// "credential:NAME" (systemd LoadCredential).
	PINSource string

	// PINValue is a PIN written in the URI itself. It is accepted because
	// RFC 7512 defines it, but it leaks into configuration files and process
	// listings; Open warns when it is used.
	PINValue string
}

// IsURI reports whether s is a PKCS#11 URI rather than a file name.
func IsURI(s string) bool { return strings.HasPrefix(s, "pkcs11:") }

// ParseURI parses an RFC 7512 PKCS#11 URI. Unknown path attributes are
// refused (a typo such as "lable=" would otherwise select the wrong key);
// unknown query attributes are refused too.
func ParseURI(s string) (*URI, error) {
	if !IsURI(s) {
		return nil, fmt.Errorf("pkcs11 URI %q: must start with \"pkcs11:\"", redact(s))
	}
	rest := strings.TrimPrefix(s, "pkcs11:")
	path, query, _ := strings.Cut(rest, "?")
	u := &URI{}
	for attr := range strings.SplitSeq(path, ";") {
		if attr == "" {
			continue
		}
		name, raw, ok := strings.Cut(attr, "=")
		if !ok {
			return nil, fmt.Errorf("pkcs11 URI %s: path attribute %q has no '='", redact(s), redact(name))
		}
		val, err := url.PathUnescape(raw)
		if err != nil {
			return nil, fmt.Errorf("pkcs11 URI %s: attribute %s: bad percent-encoding: %w", redact(s), name, err)
		}
		switch name {
		case "token":
			u.Token = val
		case "serial":
			u.Serial = val
		case "slot-id":
			n, err := strconv.ParseUint(val, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("pkcs11 URI %s: slot-id %q is not a decimal number", redact(s), redact(val))
			}
			u.SlotID, u.HasSlotID = uint(n), true
		case "object":
			u.Object = val
		case "id":
			u.ID = []byte(val)
		case "type":
			switch val {
			case "private", "public", "cert", "secret-key", "data":
				u.Type = val
			default:
				return nil, fmt.Errorf("pkcs11 URI %s: type %q: want private, public, cert, secret-key or data", redact(s), redact(val))
			}
		case "manufacturer", "model", "library-description", "library-manufacturer",
			"library-version", "slot-description", "slot-manufacturer":
			// Informational attributes that p11-kit and p11tool print; they
			// never narrow the choice further than token/serial do here.
		default:
			return nil, fmt.Errorf("pkcs11 URI %s: unknown path attribute %q (known: token, serial, slot-id, object, id, type)", redact(s), redact(name))
		}
	}
	for attr := range strings.SplitSeq(query, "&") {
		if attr == "" {
			continue
		}
		name, raw, _ := strings.Cut(attr, "=")
		val, err := url.PathUnescape(raw)
		if err != nil {
			return nil, fmt.Errorf("pkcs11 URI %s: query attribute %s: bad percent-encoding: %w", redact(s), name, err)
		}
		switch name {
		case "module-path":
			u.ModulePath = val
		case "pin-source":
			u.PINSource = val
		case "pin-value":
			u.PINValue = val
		case "x-p11-kit":
			switch sock := strings.TrimPrefix(val, "unix:path="); {
			case val == "remote":
				u.P11KitRemote = true
			case strings.HasPrefix(sock, "/") && !strings.ContainsAny(sock, ",;"):
				u.P11KitServer = filepath.Clean(sock)
			default:
				return nil, fmt.Errorf("pkcs11 URI %s: x-p11-kit=%q: want remote (host module-path with `p11-kit remote`), or the absolute path of a `p11-kit server` socket (unix:path=PATH as P11_KIT_SERVER_ADDRESS prints it, or PATH)", redact(s), redact(val))
			}
		default:
			return nil, fmt.Errorf("pkcs11 URI %s: unknown query attribute %q (known: module-path, pin-source, pin-value, x-p11-kit)", redact(s), redact(name))
		}
	}
	if u.P11KitServer != "" && u.ModulePath != "" {
		return nil, fmt.Errorf("pkcs11 URI %s: module-path and x-p11-kit=%s both say where the module is; a p11-kit server has loaded its own module: drop module-path", redact(s), u.P11KitServer)
	}
	if u.ModulePath == "" && u.P11KitServer == "" {
		u.ModulePath = DefaultModule
	}
	return u, nil
}

// ParseKeyURI parses a URI that names the device's private key: ParseURI,
// and then an object= or id= must name the key and type= may only be
// private. OpenKey and Open parse their URIs with it, and so does the
// configuration check.
func ParseKeyURI(s string) (*URI, error) {
	u, err := ParseURI(s)
	if err != nil {
		return nil, err
	}
	if u.Type != "" && u.Type != "private" {
		return nil, fmt.Errorf("%s: type=%s; the device key must be type=private (or leave type out)", u, u.Type)
	}
	if u.Object == "" && len(u.ID) == 0 {
		return nil, fmt.Errorf("%s names no key; add object=LABEL and/or id=%%XX (tether hsm list shows the keys)", u)
	}
	return u, nil
}

// CheckFiles checks the files u names without loading the module or reading
// the PIN, as far as they can be checked before the token is opened: what
// reaching the module needs (the module file, `p11-kit` in $PATH for
// `p11-kit remote`, or the p11-kit server's socket), and a PIN file must be
// a file only its owner may access. A systemd credential is looked at only where
// $CREDENTIALS_DIRECTORY is set (inside the service); getenv is the
// environment lookup (os.Getenv).
func (u *URI) CheckFiles(getenv func(string) string) error {
	if err := u.checkHost(); err != nil {
		return err
	}
	return u.checkPINFile(getenv)
}

// checkPINFile checks the PIN file u's pin-source names, if any, as
// CheckFiles does; TPM keys share it.
func (u *URI) checkPINFile(getenv func(string) string) error {
	path, err := u.pinFile(getenv)
	if err != nil || path == "" {
		return err
	}
	if err := secretfile.Check(path); err != nil {
		return fmt.Errorf("%w: PIN file: %w", ErrPINSource, err)
	}
	return nil
}

// checkModule refuses a module path that names no file.
func checkModule(path string) error {
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("%w: module %s: %w; install the token's PKCS#11 library (softhsm2, tpm2-pkcs11, opensc) or fix module-path", ErrModule, path, err)
	}
	return nil
}

// String formats u as a URI without any PIN value, for logs and errors.
func (u *URI) String() string {
	var path []string
	add := func(k, v string) { path = append(path, k+"="+escape(v)) }
	if u.Token != "" {
		add("token", u.Token)
	}
	if u.Serial != "" {
		add("serial", u.Serial)
	}
	if u.HasSlotID {
		path = append(path, "slot-id="+strconv.FormatUint(uint64(u.SlotID), 10))
	}
	if u.Object != "" {
		add("object", u.Object)
	}
	if len(u.ID) > 0 {
		var b strings.Builder
		for _, c := range u.ID {
			fmt.Fprintf(&b, "%%%02x", c)
		}
		path = append(path, "id="+b.String())
	}
	if u.Type != "" {
		add("type", u.Type)
	}
	var q []string
	if u.ModulePath != "" {
		q = append(q, "module-path="+escape(u.ModulePath))
	}
	if u.P11KitRemote {
		q = append(q, "x-p11-kit=remote")
	}
	if u.P11KitServer != "" {
		q = append(q, "x-p11-kit="+escape(u.P11KitServer))
	}
	if u.PINSource != "" {
		q = append(q, "pin-source="+escape(u.PINSource))
	}
	if u.PINValue != "" {
		q = append(q, "pin-value=REDACTED")
	}
	s := "pkcs11:" + strings.Join(path, ";")
	if len(q) > 0 {
		s += "?" + strings.Join(q, "&")
	}
	return s
}

// viaP11Kit reports whether the module is reached through p11-kit's RPC
// in a build that can also load it in-process.
func (u *URI) viaP11Kit() bool { return u.P11KitRemote || u.P11KitServer != "" }

// moduleHost names where the module runs, for errors.
func (u *URI) moduleHost() string {
	if u.P11KitServer != "" {
		return "p11-kit server " + u.P11KitServer
	}
	if u.P11KitRemote || !PKCS11InProcess {
		return "module " + u.ModulePath + " (p11-kit remote)"
	}
	return "module " + u.ModulePath
}

// checkHost checks, without contacting the module, what reaching it
// needs: the module file, the p11-kit program for `p11-kit remote`, or the
// p11-kit server's socket.
func (u *URI) checkHost() error {
	if u.P11KitServer != "" {
		if _, err := os.Stat(u.P11KitServer); err != nil {
			return fmt.Errorf("x-p11-kit=%s: %w; start `p11-kit server` with that socket name (-n) first", u.P11KitServer, err)
		}
		return checkServerSocket(u.P11KitServer)
	}
	if err := checkModule(u.ModulePath); err != nil {
		return err
	}
	if u.P11KitRemote || !PKCS11InProcess {
		if _, err := exec.LookPath("p11-kit"); err != nil {
			return fmt.Errorf("p11-kit is needed to host %s (`p11-kit remote`) and is not in $PATH: install p11-kit (Debian: apt-get install p11-kit)", u.ModulePath)
		}
	}
	return nil
}

// checkServerSocket refuses a p11-kit server socket that someone else
// could have put there: the PIN goes to whoever listens. In a directory
// that others may write to (such as /tmp), the socket must belong to root
// or to this process's user.
func checkServerSocket(path string) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return fmt.Errorf("x-p11-kit=%s: %w", path, err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("x-p11-kit=%s is not a socket; name the socket `p11-kit server -n` created", path)
	}
	dir, err := os.Stat(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("x-p11-kit=%s: %w", path, err)
	}
	if dir.Mode().Perm()&0o022 == 0 {
		return nil
	}
	owner, ok := fileOwner(fi)
	if ok && (owner == 0 || owner == os.Getuid()) {
		return nil
	}
	return fmt.Errorf("x-p11-kit=%s: the socket belongs to uid %d in %s, which others can write to, so the PIN could go to another user's process; give p11-kit server a socket in a directory only its owner writes (e.g. -n /run/p11-kit/pkcs11)", path, owner, filepath.Dir(path))
}

// selector describes how u picks its token, for errors.
func (u *URI) selector() string {
	switch {
	case u.Token != "":
		return fmt.Sprintf("token=%q", u.Token)
	case u.Serial != "":
		return fmt.Sprintf("serial=%q", u.Serial)
	case u.HasSlotID:
		return fmt.Sprintf("slot-id=%d", u.SlotID)
	}
	return "no token= in the URI (matching any)"
}

// escape percent-encodes everything RFC 7512 does not allow unescaped in an
// attribute value; '/' and ':' stay readable in paths.
func escape(v string) string {
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9',
			strings.IndexByte("-._~/:", c) >= 0:
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// RedactURI returns a key reference with every pin-value masked, so that it
// can be shown (`tether config check`, errors, logs). It masks pin-value
// anywhere in s, also in what is not a valid PKCS#11 URI ("PKCS11:…" is
// taken for a file name and quoted by the error that says it is missing).
func RedactURI(s string) string {
	// Wherever pin-value= appears, whatever the scheme's case or whether
	// s parses at all: a value mistaken for a path is quoted by errors.
	const attr = "pin-value="
	// ASCII case folding, byte by byte: strings.ToLower and strings.Map
	// change the length (a byte that is not UTF-8 becomes U+FFFD), and the
	// indexes found in lower must be those of s.
	folded := []byte(s)
	for i, c := range folded {
		if 'A' <= c && c <= 'Z' {
			folded[i] = c + ('a' - 'A')
		}
	}
	lower := string(folded)
	if !strings.Contains(lower, attr) {
		return s
	}
	var b strings.Builder
	for {
		i := strings.Index(lower, attr)
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i+len(attr)])
		b.WriteString("REDACTED")
		rest := s[i+len(attr):]
		end := strings.IndexAny(rest, "&;?#\"' \t\r\n")
		if end < 0 {
			end = len(rest)
		}
		s, lower = rest[end:], lower[i+len(attr)+end:]
	}
}

// redact is RedactURI for the URI a parse error quotes.
func redact(s string) string { return RedactURI(s) }

// ErrPINSource marks a PIN that could not be read: file missing, too open,
// credential absent, unknown scheme.
var ErrPINSource = errors.New("pkcs11 PIN source unusable")

// readPIN returns the PIN the URI points at; "" when the URI names none (the
// token may not need a login). The PIN is never part of the returned error.
func (u *URI) readPIN(getenv func(string) string) (string, error) {
	src := u.PINSource
	if src == "" {
		return u.PINValue, nil
	}
	if name, ok := strings.CutPrefix(src, "credential:"); ok {
		dir := getenv("CREDENTIALS_DIRECTORY")
		if dir == "" {
			return "", fmt.Errorf("%w: pin-source=%s: $CREDENTIALS_DIRECTORY is not set; add LoadCredential=%s:/etc/tether/pin (or SetCredentialEncrypted=) to the systemd unit", ErrPINSource, src, name)
		}
		if err := checkCredentialName(src, name); err != nil {
			return "", err
		}
		// systemd already restricts the credentials directory to the
		// service, so the mode check of PIN files is skipped for it.
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return "", fmt.Errorf("%w: pin-source=%s: %w", ErrPINSource, src, err)
		}
		return trimPIN(b), nil
	}
	path, err := u.pinFile(getenv)
	if err != nil {
		return "", err
	}
	if err := secretfile.Check(path); err != nil {
		return "", fmt.Errorf("%w: PIN file: %w", ErrPINSource, err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%w: PIN file %s: %w", ErrPINSource, path, err)
	}
	pin := trimPIN(b)
	if pin == "" {
		return "", fmt.Errorf("%w: PIN file %s is empty", ErrPINSource, path)
	}
	return pin, nil
}

// pinFile returns the PIN file pin-source names ("file:PATH", "file://PATH"
// or an absolute path), or "" for a systemd credential or no pin-source.
func (u *URI) pinFile(getenv func(string) string) (string, error) {
	src := u.PINSource
	switch {
	case src == "":
		return "", nil
	case strings.HasPrefix(src, "file:"):
		// file:///etc/x and file:/etc/x both name /etc/x.
		return strings.TrimPrefix(strings.TrimPrefix(src, "file:"), "//"), nil
	case strings.HasPrefix(src, "credential:"):
		name := strings.TrimPrefix(src, "credential:")
		if err := checkCredentialName(src, name); err != nil {
			return "", err
		}
		if dir := getenv("CREDENTIALS_DIRECTORY"); dir != "" {
			if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
				return "", fmt.Errorf("%w: pin-source=%s: %w", ErrPINSource, src, err)
			}
		}
		return "", nil
	case strings.HasPrefix(src, "/"):
		return src, nil
	}
	// Not quoted: a value that is neither a path nor a credential name is
	// most likely the PIN itself, written there by mistake.
	return "", fmt.Errorf("%w: pin-source is neither file:PATH, an absolute path nor credential:NAME (its value is not shown: it may be the PIN itself; put the PIN in a file and name it, or use pin-value)", ErrPINSource)
}

func checkCredentialName(src, name string) error {
	if name == "" || strings.ContainsRune(name, '/') {
		return fmt.Errorf("%w: pin-source=%s: credential name must be a plain file name", ErrPINSource, src)
	}
	return nil
}

func trimPIN(b []byte) string { return strings.TrimRight(string(b), "\r\n") }

// pinOrigin names where the PIN came from, for errors.
func pinOrigin(u *URI) string {
	if u.PINSource != "" {
		return "pin-source=" + u.PINSource
	}
	return "pin-value"
}
