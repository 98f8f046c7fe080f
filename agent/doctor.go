package agent

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/tetherd/tether/credprovider"
	"github.com/tetherd/tether/hsm"
	"github.com/tetherd/tether/hsm/tpm"
	"github.com/tetherd/tether/mqtt"
	"github.com/tetherd/tether/platform"
	addr "github.com/tetherd/tether/platform/endpoint"
	"github.com/tetherd/tether/platform/secretfile"
)

// Verdict is the outcome of one doctor check.
type Verdict string

// The verdicts: only Fail makes `tether doctor` exit 1; Warn is worth
// knowing (a check that could not run, a clock nothing keeps right).
const (
	Pass Verdict = "pass"
	Fail Verdict = "fail"
	Warn Verdict = "warn"
)

// Finding is one line of `tether doctor`. It holds no secret: no PIN, key,
// token or credential, only where they live and whether they work.
type Finding struct {
	// Area groups the findings: clock, certificate, files, network,
	// agent, roles.
	Area string `json:"area"`
	// Check names what was looked at, e.g. "credentials endpoint tls".
	Check   string  `json:"check"`
	Verdict Verdict `json:"verdict"`
	// Detail says what was found.
	Detail string `json:"detail"`
	// Fix is what to do, in one sentence, when the verdict is not Pass.
	Fix string `json:"fix,omitempty"`
}

// Diagnosis is what `tether doctor` found.
type Diagnosis struct {
	Config   string    `json:"config"`
	OK       bool      `json:"ok"`
	Findings []Finding `json:"findings"`
}

// DoctorOptions configure Doctor.
type DoctorOptions struct {
	// Socket is the running agent's socket; "" is the configuration's.
	Socket string
	// ServiceUser is the account the service runs as, whose access to each
	// file is checked; "" is "tether" when that user exists, "-" none.
	ServiceUser string
	// DeviceCA, when set, is a PEM file with the CA that issued the device
	// certificate (the one registered with AWS IoT), to verify it against.
	DeviceCA string
	// Timeout bounds each network step; default 10 s.
	Timeout time.Duration
	// Getenv reads the environment for the key's files (the PIN's
	// credential directory); default os.Getenv. Proxies are read from the
	// process's environment, as the HTTP client that fetches reads them.
	Getenv func(string) string
}

// Thresholds of the clock check: AWS refuses SigV4 requests whose clock is
// off by more than 5 minutes, and credentials then look expired or not yet
// issued.
const (
	maxClockSkew  = 5 * time.Minute
	warnClockSkew = time.Minute
	// warnCertDays is when a certificate's coming expiry becomes a warning.
	warnCertDays = 30
)

// areaOrder is the order the areas are shown in.
var areaOrder = map[string]int{"clock": 0, "certificate": 1, "files": 2, "network": 3, "agent": 4, "roles": 5}

// byArea orders findings by areaOrder (an area it does not name comes
// first), each area's in the order they were found. A pass per area rather
// than slices.SortStableFunc, whose instantiation for Finding is ~4 KB of
// code for six areas (docs/footprint.md).
func byArea(fs []Finding) []Finding {
	out := make([]Finding, 0, len(fs))
	for rank := range len(areaOrder) {
		for _, f := range fs {
			if areaOrder[f.Area] == rank {
				out = append(out, f)
			}
		}
	}
	return out
}

// Doctor answers "why doesn't this gateway get credentials?" for a valid
// cfg: it checks the clock, the certificate and key, the files and who may
// read them, the network path to every endpoint, the running agent and
// every role, and says for each what is wrong and what to do. It never
// logs in to a token a running agent holds (it asks the agent instead),
// and never shows a secret.
func Doctor(ctx context.Context, cfg *Config, o DoctorOptions) *Diagnosis {
	if o.Socket == "" {
		o.Socket = cfg.Serve.Socket
	}
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
	d := &doctor{cfg: cfg, o: o, diag: &Diagnosis{Config: cfg.File}}
	sctx, cancel := context.WithTimeout(ctx, o.Timeout)
	d.st, d.agentErr = FetchStatus(sctx, o.Socket)
	cancel()

	d.timeSync()
	d.files()
	id := d.identity(ctx)
	if id != nil {
		defer id.Close()
	}
	d.credentialsEndpoint(ctx, id)
	d.stsEndpoints(ctx)
	d.mqttEndpoint(ctx, id)
	d.agent()
	d.roles(ctx)

	d.diag.Findings = byArea(d.diag.Findings)
	d.diag.OK = true
	for _, f := range d.diag.Findings {
		if f.Verdict == Fail {
			d.diag.OK = false
		}
	}
	return d.diag
}

type doctor struct {
	cfg      *Config
	o        DoctorOptions
	diag     *Diagnosis
	st       *Status // the running agent's, nil when it is not reachable
	agentErr error
	device   *aws.Credentials // fetched by the doctor itself, never shown
}

func (d *doctor) add(area, check string, v Verdict, detail, fix string) {
	if v == Pass {
		fix = ""
	}
	d.diag.Findings = append(d.diag.Findings, Finding{Area: area, Check: check, Verdict: v, Detail: detail, Fix: fix})
}

// result adds a finding that passes when err is nil, and fails with err's
// text (which names the file or peer) and fix otherwise.
func (d *doctor) result(area, check string, err error, ok, fix string) {
	if err != nil {
		d.add(area, check, Fail, ErrorLine(err), fix)
		return
	}
	d.add(area, check, Pass, ok, "")
}

// tokenKey reports whether the identity's key is in a PKCS#11 token or a
// TPM, which opening would log in to.
func (d *doctor) tokenKey() bool {
	k := d.cfg.Identity.PrivateKey
	return hsm.IsURI(k) || tpm.IsURI(k)
}

// --- clock ---

func (d *doctor) timeSync() {
	now := time.Now()
	if nb := credprovider.DefaultNotBefore(); now.Before(nb) {
		d.add("clock", "clock", Fail, (&credprovider.ClockError{Now: now, NotBefore: nb}).Error(),
			"set the clock and keep it set: enable an NTP client (systemd-timesyncd, chrony) that can reach a server")
	}
	ts, err := platform.ReadTimeSync()
	switch {
	case err != nil:
		d.add("clock", "time sync", Warn, "cannot ask the kernel (adjtimex): "+err.Error(), "check that an NTP client runs")
	case ts.Synchronised:
		detail := fmt.Sprintf("the kernel reports the clock synchronised (estimated error %s)", time.Duration(ts.MaxError)*time.Microsecond)
		if ts.Timesyncd {
			detail += "; systemd-timesyncd has synchronised it"
		}
		d.add("clock", "time sync", Pass, detail, "")
	default:
		detail := "the kernel reports the clock unsynchronised (adjtimex STA_UNSYNC): nothing keeps it right"
		if ts.Timesyncd {
			detail += " (systemd-timesyncd says it synchronised once)"
		}
		d.add("clock", "time sync", Warn, detail,
			"enable an NTP client (timedatectl set-ntp true, or chrony); a gateway without a battery-backed clock boots in 1970")
	}
}

// serverClock compares the local clock with the credentials endpoint's
// Date header.
func (d *doctor) serverClock(c credprovider.ServerClock, ok bool) {
	if !ok {
		d.add("clock", "endpoint clock", Warn, "not compared: the credentials endpoint gave no answer with a Date header",
			"make the credentials endpoint reachable (see network)")
		return
	}
	skew := c.Skew().Round(time.Second)
	abs, dir := skew, "ahead of"
	if skew < 0 {
		abs, dir = -skew, "behind"
	}
	detail := fmt.Sprintf("the local clock is %s %s the credentials endpoint's (Date: %s)", abs, dir, c.Date.UTC().Format(time.RFC3339))
	fix := "set the clock (chronyc makestep, or timedatectl set-ntp true) and keep an NTP client running: skewed clocks make AWS refuse requests and credentials look expired"
	switch {
	case abs > maxClockSkew:
		d.add("clock", "endpoint clock", Fail, detail, fix)
	case abs > warnClockSkew:
		d.add("clock", "endpoint clock", Warn, detail, fix)
	default:
		d.add("clock", "endpoint clock", Pass, fmt.Sprintf("within %s of the credentials endpoint's clock", max(abs, time.Second)), "")
	}
}

// --- files ---

// account is the service user, nil when there is none to check for.
func (d *doctor) account() *platform.Account {
	name := d.o.ServiceUser
	if name == "-" {
		return nil
	}
	explicit := name != ""
	if !explicit {
		name = "tether"
	}
	a, err := platform.LookupAccount(name)
	if err != nil {
		if explicit {
			d.add("files", "service user", Fail, fmt.Sprintf("user %s: %v", name, err), "create the user or pass the one the service runs as with --user")
		}
		return nil
	}
	return &a
}

// access checks that the service user may access path as want asks.
func (d *doctor) access(acct *platform.Account, what, path string, want platform.Access) {
	if acct == nil || path == "" {
		return
	}
	if err := acct.CanAccess(path, want); err != nil {
		d.add("files", what+" access", Fail, ErrorLine(err), fmt.Sprintf("let user %s %s %s (chown %s, or add it to the file's group)", acct.Name, want, path, acct.Name))
		return
	}
	d.add("files", what+" access", Pass, fmt.Sprintf("user %s may %s %s", acct.Name, want, path), "")
}

func (d *doctor) files() {
	c := d.cfg
	acct := d.account()

	if st, err := os.Stat(c.File); err == nil {
		if st.Mode().Perm()&0o022 != 0 {
			d.add("files", "configuration", Fail, fmt.Sprintf("%s has mode %04o: others may change what tether trusts", c.File, st.Mode().Perm()),
				"run chmod go-w "+c.File)
		} else {
			d.add("files", "configuration", Pass, fmt.Sprintf("%s (mode %04o)", c.File, st.Mode().Perm()), "")
		}
	}
	d.access(acct, "configuration", c.File, platform.Read)
	d.access(acct, "certificate", c.Identity.Certificate, platform.Read)

	key := c.Identity.PrivateKey
	switch {
	case hsm.IsURI(key):
		u, err := hsm.ParseKeyURI(key)
		if err == nil {
			err = u.CheckFiles(d.o.Getenv)
		}
		d.result("files", "key URI", err, hsm.RedactURI(key)+": module and PIN source in place", "fix the key URI's module-path, x-p11-kit or pin-source (tether hsm list shows the tokens)")
	case tpm.IsURI(key):
		d.result("files", "key", hsm.CheckTPMKey(key, d.o.Getenv), hsm.RedactURI(key)+": TPM and key reference in place", "fix the tpm: reference or make the TPM device readable (docs/tpm.md)")
	default:
		err := secretfile.Check(key)
		fix := "give the key file to the service user with mode 0600"
		var me *secretfile.ModeError
		if errors.As(err, &me) {
			fix = "run chmod 600 " + key
		}
		d.result("files", "key", err, key+" is a private key file only its owner may read", fix)
	}
	if f, ok := hsm.KeyFile(key); ok {
		d.access(acct, "key", f, platform.Read)
	}
	if f, err := hsm.PINFile(key, d.o.Getenv); err == nil && f != "" {
		d.access(acct, "PIN file", f, platform.Read)
	}

	dir := filepath.Dir(c.State.Path)
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		if err == nil {
			err = fmt.Errorf("%s is not a directory", dir)
		}
		d.add("files", "state directory", Fail, ErrorLine(err), "create it for the service user (systemd's StateDirectory=tether does)")
	} else {
		d.add("files", "state directory", Pass, dir, "")
		d.access(acct, "state directory", dir, platform.Write|platform.Exec)
	}

	if d.st == nil {
		return // the socket and the token file are the running agent's
	}
	if st, err := os.Stat(d.o.Socket); err == nil && st.Mode()&os.ModeSocket != 0 {
		d.add("files", "socket", Pass, fmt.Sprintf("%s (mode %04o)", d.o.Socket, st.Mode().Perm()), "")
	}
	if c.Serve.ContainerEndpoint == "" {
		return
	}
	st, err := os.Stat(c.Serve.TokenFile)
	switch {
	case err != nil:
		d.add("files", "token file", Fail, ErrorLine(err)+"; programs cannot authenticate at the container endpoint",
			"restart the agent (it writes a new token at each start) and do not delete "+c.Serve.TokenFile)
	case st.Mode().Perm()&0o007 != 0:
		d.add("files", "token file", Fail, fmt.Sprintf("%s has mode %04o: every local user can read the token", c.Serve.TokenFile, st.Mode().Perm()),
			"run chmod 640 "+c.Serve.TokenFile+" and restart the agent")
	default:
		d.add("files", "token file", Pass, fmt.Sprintf("%s (mode %04o)", c.Serve.TokenFile, st.Mode().Perm()), "")
	}
}

// --- certificate and key ---

// identity checks the certificate, then opens the identity when that needs
// no second login (a PEM key, or no running agent holds the token), and
// returns it for the network checks.
func (d *doctor) identity(ctx context.Context) *hsm.Identity {
	c := d.cfg.Identity
	chain, err := hsm.LoadCertificateChain(c.Certificate)
	if err != nil {
		d.add("certificate", "chain", Fail, ErrorLine(err), "install the device certificate (PEM) at "+c.Certificate)
		return nil
	}
	leaf, now := chain[0], time.Now()
	var roots *x509.CertPool
	rootDesc := ""
	switch last := chain[len(chain)-1]; {
	case d.o.DeviceCA != "":
		if roots, err = credprovider.LoadCAFile(d.o.DeviceCA); err != nil {
			d.add("certificate", "chain", Fail, ErrorLine(err), "pass the CA registered with AWS IoT, in PEM, to --ca")
			return nil
		}
		rootDesc = ", verified against " + d.o.DeviceCA
	case len(chain) > 1 && last.CheckSignatureFrom(last) == nil:
		roots = x509.NewCertPool()
		roots.AddCert(last)
		rootDesc = ", verified against the root in the file"
	}
	if err := hsm.CheckChain(c.Certificate, chain, roots, now); err != nil {
		d.add("certificate", "chain", Fail, ErrorLine(err), "install a valid certificate for this device (or check the clock)")
	} else {
		d.add("certificate", "chain", Pass, fmt.Sprintf("%q issued by %q%s", leaf.Subject.CommonName, leaf.Issuer.CommonName, rootDesc), "")
		days := int(leaf.NotAfter.Sub(now).Hours() / 24)
		detail := fmt.Sprintf("valid until %s (%d days left)", leaf.NotAfter.UTC().Format(time.RFC3339), days)
		switch {
		case days < warnCertDays && c.RotationTemplate == "":
			d.add("certificate", "expiry", Warn, detail, "issue a new certificate before then, or set [identity] rotation_template to rotate it (docs/identity.md)")
		default:
			d.add("certificate", "expiry", Pass, detail, "")
		}
	}

	if d.tokenKey() && d.st != nil {
		// The agent is logged in: ask it, do not log in again.
		id := d.st.Identity
		if id.CertificateID != "" && id.CertificateID != certificateID(leaf) {
			d.add("certificate", "key", Warn, "the running agent holds another certificate than "+c.Certificate+" (rotated, or the file changed since it started)",
				"reload the agent (systemctl reload tether) if the file is the one to use")
			return nil
		}
		d.add("certificate", "key", Pass, "held by the running agent ("+id.Key+"); not opened again, no second login", "")
		return nil
	}
	if name, ok := credentialPIN(c.PrivateKey); ok && d.o.Getenv("CREDENTIALS_DIRECTORY") == "" {
		d.add("certificate", "key", Warn, "not opened: its PIN is the systemd credential "+name+", which only the service can read",
			"run the doctor as the service: systemd-run --pipe --wait -p LoadCredential="+name+":/etc/tether/pin tether doctor")
		return nil
	}
	id, err := hsm.Open(ctx, c.Certificate, c.PrivateKey)
	if err != nil {
		fix := "pair the certificate with its key and check the key reference"
		var me *secretfile.ModeError
		switch {
		case errors.Is(err, hsm.ErrTokenUnavailable):
			fix = "insert or initialise the token, or fix token= in the key URI (tether hsm list shows the tokens present)"
		case errors.Is(err, hsm.ErrPINSource):
			fix = "put the token's user PIN in the file pin-source names, mode 0600"
		case errors.As(err, &me):
			fix = "run chmod 600 " + me.Path
		}
		d.add("certificate", "key", Fail, ErrorLine(err), fix)
		return nil
	}
	d.add("certificate", "key", Pass, id.KeyLocation()+" opened and matches the certificate", "")
	return id
}

// --- network ---

// probe adds one finding per step of reaching ep and reports whether they
// all passed.
func (d *doctor) probe(ctx context.Context, name string, ep addr.Endpoint, o addr.ProbeOptions, fixes map[string]string) bool {
	o.Timeout = d.o.Timeout
	for _, s := range addr.Probe(ctx, ep, o) {
		if s.Err != nil {
			d.add("network", name+" "+s.Name, Fail, s.Detail+": "+ErrorLine(s.Err), fixes[s.Name])
			return false
		}
		d.add("network", name+" "+s.Name, Pass, s.Detail, "")
	}
	return true
}

// proxy returns the proxy the environment sets for rawURL, and notes it.
func (d *doctor) proxy(name, rawURL string) *url.URL {
	req, _ := http.NewRequest(http.MethodGet, rawURL, nil)
	p, err := http.ProxyFromEnvironment(req)
	if err != nil {
		d.add("network", name+" proxy", Fail, "the proxy in the environment is not a valid URL: "+err.Error(), "fix HTTPS_PROXY")
		return nil
	}
	if p != nil {
		d.add("network", name+" proxy", Warn, "requests to "+req.URL.Host+" go through the proxy "+p.Redacted()+" (HTTPS_PROXY; NO_PROXY does not exclude it)",
			"nothing if that is intended; otherwise add the host to NO_PROXY (the service's environment may differ from this shell's)")
	}
	return p
}

func (d *doctor) credentialsEndpoint(ctx context.Context, id *hsm.Identity) {
	a := d.cfg.AWS
	ep, err := addr.Parse(a.CredentialEndpoint)
	if err != nil {
		d.add("network", "credentials endpoint", Fail, err.Error(), "fix [aws] credential_endpoint")
		return
	}
	if ep.Port == 0 {
		ep.Port = 443
	}
	roots, caDesc, err := deviceOptions(d.cfg).Roots()
	if err != nil {
		d.add("network", "credentials endpoint tls", Fail, ErrorLine(err), "fix [aws] ca_file")
		return
	}
	name := "credentials endpoint"
	o := addr.ProbeOptions{TLS: tlsVerify(roots, ep.Host), Proxy: d.proxy(name, "https://"+ep.String()+"/")}
	reached := d.probe(ctx, name, ep, o, map[string]string{
		"dns": "check [aws] credential_endpoint (aws iot describe-endpoint --endpoint-type iot:CredentialProvider) and the resolver (/etc/resolv.conf)",
		"tcp": fmt.Sprintf("let the gateway reach %s on TCP port %d (firewall, route, or the proxy)", ep.Host, ep.Port),
		"tls": "set [aws] ca_file to the CA that signs the credentials endpoint (now " + caDesc + "), check credential_endpoint, and the clock",
	})
	if !reached {
		d.serverClock(credprovider.ServerClock{}, false)
		return
	}
	check := name + " role alias"
	if id == nil {
		// The running agent holds the key: its device role tells.
		if r := d.agentRole(DeviceRole); r != nil {
			if r.Valid {
				d.add("network", check, Pass, fmt.Sprintf("role alias %q: the running agent holds valid device credentials", a.RoleAlias), "")
			} else {
				d.add("network", check, Fail, fmt.Sprintf("role alias %q: the agent has no valid device credentials: %s", a.RoleAlias, r.LastError), serviceFix(nil))
			}
		} else {
			d.add("network", check, Warn, "not tried: the key could not be opened", "fix the key first (see certificate)")
		}
		d.serverClock(d.agentClock())
		return
	}
	p, err := NewDeviceProvider(d.cfg, id)
	if err != nil {
		d.add("network", check, Fail, ErrorLine(err), "fix [aws]")
		return
	}
	defer p.CloseIdleConnections()
	creds, err := p.Retrieve(ctx)
	d.serverClock(p.ServerClock())
	if err != nil {
		d.add("network", check, Fail, ErrorLine(err), serviceFix(err))
		return
	}
	d.device = &creds
	d.add("network", check, Pass, fmt.Sprintf("role alias %q accepted the device certificate: credentials issued, valid until %s",
		a.RoleAlias, creds.Expires.UTC().Format(time.RFC3339)), "")
}

// agentClock is the endpoint clock the running agent saw.
func (d *doctor) agentClock() (credprovider.ServerClock, bool) {
	if d.st == nil || d.st.ServerClock == nil {
		return credprovider.ServerClock{}, false
	}
	return *d.st.ServerClock, true
}

// serviceFix says what to do about a refusal of the credentials endpoint.
func serviceFix(err error) string {
	var se *credprovider.ServiceError
	var te *credprovider.TLSError
	switch {
	case errors.As(err, &se) && se.StatusCode == http.StatusNotFound:
		return "check [aws] role_alias (aws iot list-role-aliases) and that credential_endpoint is this account's and region's"
	case errors.As(err, &se) && se.StatusCode == http.StatusBadRequest:
		return "check [identity] thing_name and [aws] duration (at most the role alias's credentialDurationSeconds)"
	case errors.As(err, &se) && se.StatusCode/100 == 5, errors.As(err, &se) && se.StatusCode == http.StatusTooManyRequests:
		return "wait: the service is failing or throttling; the agent retries with backoff"
	case errors.As(err, &te) && te.Problem == credprovider.TLSServerCertInvalid:
		return "check the clock, then credential_endpoint"
	case errors.As(err, &te) && te.Problem != credprovider.TLSClientCertRejected:
		return "set [aws] ca_file to the CA that signs the endpoint and check credential_endpoint"
	}
	return "register and activate the certificate in AWS IoT, attach it to the thing and to a policy that allows iot:AssumeRoleWithCertificate on the role alias"
}

// stsEndpoint is the STS URL a role signs its requests at.
func stsEndpoint(r *RoleConfig) string {
	if r.STSEndpoint != "" {
		return r.STSEndpoint
	}
	return "https://sts." + r.Region + ".amazonaws.com"
}

func (d *doctor) stsEndpoints(ctx context.Context) {
	seen := map[string]bool{}
	for i := range d.cfg.Roles {
		r := &d.cfg.Roles[i]
		if len(r.CredentialCommand) > 0 {
			continue
		}
		raw := stsEndpoint(r)
		if seen[raw] {
			continue
		}
		seen[raw] = true
		u, err := url.Parse(raw)
		if err != nil {
			continue // validation has refused it
		}
		ep := addr.Endpoint{Host: u.Hostname(), Port: 443}
		if n, err := strconv.Atoi(u.Port()); err == nil {
			ep.Port = n
		} else if u.Scheme == "http" {
			ep.Port = 80
		}
		name := "STS " + u.Host
		var o addr.ProbeOptions
		if u.Scheme == "https" {
			// The SDK's client trusts the system's roots.
			o = addr.ProbeOptions{TLS: tlsVerify(nil, ep.Host), Proxy: d.proxy(name, raw)}
		}
		d.probe(ctx, name, ep, o, map[string]string{
			"dns": "check sts_endpoint and region of the roles that use it, and the resolver",
			"tcp": fmt.Sprintf("let the gateway reach %s on TCP port %d (firewall, route, proxy)", ep.Host, ep.Port),
			"tls": "install the CA that signs the STS endpoint in the system's trust store (or set AWS_CA_BUNDLE for the service)",
		})
	}
}

func (d *doctor) mqttEndpoint(ctx context.Context, id *hsm.Identity) {
	m := d.cfg.MQTT
	if m.Endpoint == "" {
		return
	}
	host, port := mqtt.SplitEndpoint(m.Endpoint, m.Port)
	ep := addr.Endpoint{Host: host, Port: port}
	roots, err := brokerRoots(d.cfg)
	if err != nil {
		d.add("network", "MQTT endpoint tls", Fail, ErrorLine(err), "fix [mqtt] ca_file")
		return
	}
	conf := tlsVerify(roots, ep.Host)
	conf.NextProtos = mqtt.NextProtos(ep.Port)
	if !d.probe(ctx, "MQTT endpoint", ep, addr.ProbeOptions{TLS: conf}, map[string]string{
		"dns": "check [mqtt] endpoint (aws iot describe-endpoint --endpoint-type iot:Data-ATS) and the resolver",
		"tcp": fmt.Sprintf("let the gateway reach %s on TCP port %d (firewall; port 443 if 8883 is blocked)", ep.Host, ep.Port),
		"tls": "set [mqtt] ca_file to the CA that signs the broker, and check [mqtt] endpoint",
	}) {
		return
	}
	// CONNECT: the agent's session tells while it runs. The doctor connects
	// itself only when no session of the agent's is there to knock off the
	// broker (one client id, one connection).
	var ms *mqtt.Status
	if d.st != nil {
		ms = d.st.MQTT
	}
	const check = "MQTT endpoint connect"
	fix := "let the certificate's IoT policy allow iot:Connect for the client id, and check that the broker trusts the certificate's CA and has not revoked it"
	switch {
	case ms == nil && id == nil:
		d.add("network", check, Warn, "not tried: the key could not be opened", "fix the key first (see certificate)")
	case ms == nil:
		o := sessionOptions(d.cfg)
		cert := id.Certificate()
		o.Certificate, o.RootCAs, o.ConnectTimeout = &cert, roots, d.o.Timeout
		clientID := cmp.Or(o.ClientID, o.ThingName)
		if err := mqtt.ProbeConnect(ctx, o); err != nil {
			d.add("network", check, Fail, ErrorLine(err), fix)
		} else {
			d.add("network", check, Pass, fmt.Sprintf("CONNECT accepted for client id %q (session kept, nothing acknowledged)", clientID), "")
		}
	case ms.State == mqtt.StateConnected:
		d.add("network", check, Pass, fmt.Sprintf("the agent's session (client id %q) was accepted %s", ms.ClientID, ms.Since.UTC().Format(time.RFC3339)), "")
	default:
		d.add("network", check, Fail, fmt.Sprintf("the agent's session (client id %q) is %s: %s", ms.ClientID, ms.State, ms.LastError), fix)
	}
}

// --- the running agent ---

func (d *doctor) agentRole(name string) *RoleStatus {
	if d.st == nil {
		return nil
	}
	for i := range d.st.Roles {
		if d.st.Roles[i].Name == name {
			return &d.st.Roles[i]
		}
	}
	return nil
}

func (d *doctor) agent() {
	if d.st == nil {
		d.add("agent", "reachable", Fail, ErrorLine(d.agentErr), "start it (systemctl start tether) or pass --socket")
		return
	}
	st := d.st
	d.add("agent", "reachable", Pass, fmt.Sprintf("tether %s at %s, up %s", st.Version, d.o.Socket, time.Since(st.Started).Round(time.Second)), "")
	if st.Store.LastError != "" {
		d.add("agent", "store", Fail, st.Store.Path+": "+st.Store.LastError, "check the disk and the state directory's permissions")
	} else {
		d.add("agent", "store", Pass, fmt.Sprintf("%s (%d bytes)", st.Store.Path, st.Store.Size), "")
	}
	for _, ep := range []struct{ name, key, addr string }{
		{"container endpoint", "serve.container_endpoint", d.cfg.Serve.ContainerEndpoint},
		{"IMDS endpoint", "serve.imds_endpoint", d.cfg.Serve.IMDSEndpoint},
	} {
		if ep.addr == "" {
			continue
		}
		if c, err := net.DialTimeout("tcp", ep.addr, d.o.Timeout); err != nil {
			d.add("agent", ep.name, Fail, fmt.Sprintf("nothing listens on %s: %v", ep.addr, unwrapOp(err)),
				"reload or restart the agent so that it listens where "+ep.key+" says, or fix "+ep.key)
		} else {
			c.Close()
			d.add("agent", ep.name, Pass, "listening on "+ep.addr, "")
		}
	}
	if r := st.Rotation; r != nil && r.LastError != "" {
		d.add("agent", "rotation", Warn, "the last certificate rotation failed: "+r.LastError, "see docs/identity.md; the current certificate stays in use")
	}
	if m := st.MQTT; m != nil {
		ob := m.Outbox
		d.add("agent", "outbox", Pass, fmt.Sprintf("%d messages queued (%d bytes)", ob.Depth, ob.Bytes), "")
		if ob.DeadLetters > 0 {
			detail := fmt.Sprintf("%d dead letters kept (%d since start)", ob.DeadLetters, ob.DeadLettered)
			if ob.LastDeadLetter != "" {
				detail += "; last: " + ob.LastDeadLetter
			}
			d.add("agent", "dead letters", Warn, detail, "check the topics and payloads refused by the broker (docs/mqtt.md)")
		}
	}
}

// --- roles ---

func (d *doctor) roles(ctx context.Context) {
	// What the running agent holds, it tells; the roles it does not hold
	// (it runs another configuration, or none runs) are assumed once, as
	// the agent would.
	if r := d.agentRole(DeviceRole); r != nil {
		d.agentRoleFinding(*r)
	}
	tried := false
	for i := range d.cfg.Roles {
		if r := d.agentRole(d.cfg.Roles[i].Name); r != nil {
			d.agentRoleFinding(*r)
		} else {
			tried = true
		}
	}
	if !tried {
		return
	}
	var device aws.CredentialsProvider = aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		return aws.Credentials{}, errors.New("no device credentials (see network)")
	})
	if d.device != nil {
		c := *d.device
		device = aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) { return c, nil })
	}
	err := buildRoleProviders(d.cfg, device, func(r *RoleConfig, p aws.CredentialsProvider) (aws.CredentialsProvider, error) {
		check := "role " + r.Name
		switch {
		case d.agentRole(r.Name) != nil:
			return p, nil
		case r.MFASerial != "":
			d.add("roles", check, Warn, "not tried: it needs an MFA code", "check it with the agent running (tether status)")
			return p, nil
		}
		rctx, cancel := context.WithTimeout(ctx, d.o.Timeout)
		c, err := p.Retrieve(rctx)
		cancel()
		if err != nil {
			var sso *credprovider.SSOLoginError
			if errors.As(err, &sso) {
				err = sso // what the operator must act on, not the SDK's chain around it
			}
			d.add("roles", check, Fail, ErrorLine(err), roleFix(err))
			return p, nil
		}
		d.add("roles", check, Pass, "credentials issued, valid until "+c.Expires.UTC().Format(time.RFC3339), "")
		return p, nil
	})
	if err != nil {
		d.add("roles", "roles", Fail, ErrorLine(err), roleFix(err))
	}
}

func (d *doctor) agentRoleFinding(r RoleStatus) {
	check := "role " + r.Name
	fix := r.Fix
	if fix == "" {
		fix = "see the role's last error; tether status shows its refreshes"
	}
	switch {
	case r.ClockError != "":
		d.add("roles", check, Fail, r.ClockError, "set the clock (see clock)")
	case !r.Valid && r.LastError == "" && r.Failures == 0:
		d.add("roles", check, Warn, "no credentials yet: the first fetch is under way", "run the doctor again in a moment")
	case !r.Valid:
		d.add("roles", check, Fail, "no valid credentials: "+r.LastError, fix)
	case r.LastError != "":
		d.add("roles", check, Warn, "valid until "+r.Expires.UTC().Format(time.RFC3339)+", but the last refresh failed: "+r.LastError, fix)
	default:
		d.add("roles", check, Pass, "valid until "+r.Expires.UTC().Format(time.RFC3339), "")
	}
}

// roleFix says what to do about a role that could not be assumed.
func roleFix(err error) string {
	var sso *credprovider.SSOLoginError
	if errors.As(err, &sso) {
		return sso.Fix()
	}
	return "check the role's trust policy, role_arn and source (docs/roles.md)"
}

// tlsVerify is a client configuration that verifies host against roots
// (nil: the system's).
func tlsVerify(roots *x509.CertPool, host string) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots, ServerName: host}
}
