package credprovider

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"time"
	"unicode"

	"github.com/tetherd/tether/platform/endpoint"
)

// OptionError is an option, or a file an option names, that this package
// refuses. Field is the option's Go name ("IoTOptions.RoleAlias",
// "STSOptions.Region"), so that a caller that reads its options from a file
// of its own can name its own key instead, the way agent names the TOML key
// and line. It matches ErrInvalidConfig with errors.Is.
type OptionError struct {
	Field string
	// Issue says what is wrong and what to do; it never holds a secret.
	Issue string
}

func (e *OptionError) Error() string { return "credprovider: " + e.Field + ": " + e.Issue }

// Is makes every OptionError match ErrInvalidConfig.
func (e *OptionError) Is(target error) bool { return target == ErrInvalidConfig }

// optionErrors collects the OptionErrors of one Validate, so a caller sees
// them all at once.
type optionErrors []error

func (l *optionErrors) add(field, format string, args ...any) {
	*l = append(*l, &OptionError{Field: field, Issue: fmt.Sprintf(format, args...)})
}

// addAs adds err, renamed to field when it is an OptionError about a file
// that a function of this package checked for that option.
func (l *optionErrors) addAs(field string, err error) {
	var oe *OptionError
	if errors.As(err, &oe) {
		l.add(field, "%s", oe.Issue)
		return
	}
	*l = append(*l, err)
}

func (l optionErrors) err() error { return errors.Join(l...) }

// Limits STS puts on the parameters of a session, checked before a request
// is made so that a configuration check reports them.
const (
	MaxSessionPolicyBytes = 2048
	MaxPolicyARNs         = 10
	MaxSessionTags        = 50
	MaxTagKeyLength       = 128
	MaxTagValueLength     = 256
)

// ValidSourceIdentity reports whether s is a SourceIdentity STS accepts:
// 2-64 of letters, digits and +=,.@-_.
func ValidSourceIdentity(s string) bool { return nameOf(s, 2, 64, "+=,.@-") }

// SourceIdentityOf makes a SourceIdentity (and RoleSessionName) of any
// text, such as a systemd unit or a thing name: every character STS does not
// accept there becomes '_', and the result is cut to 64 characters.
func SourceIdentityOf(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !word(c) && strings.IndexByte("+=,.@-", c) < 0 {
			b[i] = '_'
		}
	}
	return string(b[:min(len(b), 64)])
}

// TagValueOf makes a session tag value of any text: every character STS does
// not accept in a tag becomes '_', and the result is cut to
// MaxTagValueLength characters.
func TagValueOf(s string) string {
	var b strings.Builder
	n := 0
	for _, r := range s {
		if n == MaxTagValueLength {
			break
		}
		if !tagRune(r) {
			r = '_'
		}
		b.WriteRune(r)
		n++
	}
	return b.String()
}

func tagRune(r rune) bool {
	return unicode.IsLetter(r) || unicode.In(r, unicode.Z) || unicode.IsNumber(r) || strings.ContainsRune("_.:/=+-@", r)
}

// tags checks session tags against STS's grammar and limits: at most
// MaxSessionTags, keys unique regardless of case and not in the reserved
// aws: namespace.
func (l *optionErrors) tags(field string, tags map[string]string, transitive []string) {
	if len(tags) > MaxSessionTags {
		l.add(field+"Tags", "has %d tags; STS accepts at most %d", len(tags), MaxSessionTags)
	}
	folded := map[string]string{}
	for _, k := range sortedKeys(tags) {
		v := tags[k]
		switch {
		case !validTag(k, 1, MaxTagKeyLength):
			l.add(field+"Tags", "key %q: keys are 1-%d of letters, numbers, spaces and _.:/=+-@", k, MaxTagKeyLength)
		case strings.HasPrefix(strings.ToLower(k), "aws:"):
			l.add(field+"Tags", "key %q: the aws: prefix is reserved for AWS", k)
		case !validTag(v, 0, MaxTagValueLength):
			l.add(field+"Tags", "tag %q: values are at most %d of letters, numbers, spaces and _.:/=+-@", k, MaxTagValueLength)
		}
		if prev, dup := folded[strings.ToLower(k)]; dup {
			l.add(field+"Tags", "keys %q and %q differ only in case, which STS counts as the same key", prev, k)
		}
		folded[strings.ToLower(k)] = k
	}
	for _, k := range transitive {
		if _, ok := tags[k]; !ok {
			l.add(field+"TransitiveTagKeys", "%q is not one of the tag keys", k)
		}
	}
}

func sortedKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// PackPolicy returns a session policy document as STS measures it: the
// JSON without insignificant white space. It refuses a document that is
// not JSON, longer than MaxSessionPolicyBytes characters packed, or holding
// characters STS does not accept (it takes U+0020-U+00FF, tab, LF and CR).
// Errors are *OptionError for Field "Policy".
func PackPolicy(doc string) (string, error) {
	var buf bytes.Buffer
	if err := json.Compact(&buf, []byte(doc)); err != nil {
		return "", &OptionError{Field: "Policy", Issue: "is not valid JSON; give an IAM policy document"}
	}
	packed := buf.String()
	n := 0
	for _, r := range packed {
		if r > 0xff || (r < 0x20 && r != '\t' && r != '\n' && r != '\r') {
			return "", &OptionError{Field: "Policy", Issue: fmt.Sprintf("holds %q, which STS does not accept in a policy (only U+0020-U+00FF, tab, LF, CR)", r)}
		}
		n++
	}
	if n > MaxSessionPolicyBytes {
		return "", &OptionError{Field: "Policy", Issue: fmt.Sprintf("is %d characters without white space; STS accepts at most %d", n, MaxSessionPolicyBytes)}
	}
	return packed, nil
}

// Validate checks the options as NewIoT does, except the device certificate,
// which a caller checking a configuration file has not opened yet: endpoint,
// role alias, thing name, duration, timeout and CA file.
func (o IoTOptions) Validate() error {
	var l optionErrors
	if _, err := endpointHost(o.Endpoint); err != nil {
		l = append(l, err)
	}
	switch {
	case o.RoleAlias == "":
		l.add("IoTOptions.RoleAlias", "is empty: give the IoT role alias the device certificate's policy allows")
	case !validRoleAlias(o.RoleAlias):
		l.add("IoTOptions.RoleAlias", "%q is not a valid role alias (1-128 of letters, digits and =,@-_)", o.RoleAlias)
	}
	if o.ThingName != "" && !validThingName(o.ThingName) {
		l.add("IoTOptions.ThingName", "%q is not a valid thing name (1-128 of a-z A-Z 0-9 : _ -)", o.ThingName)
	}
	if d := o.Duration; d != 0 && (d < MinIoTDuration || d > MaxIoTDuration || d%time.Second != 0) {
		l.add("IoTOptions.Duration", "%v is out of range: the credentials provider accepts whole seconds from %v to %v", d, MinIoTDuration, MaxIoTDuration)
	}
	if o.Timeout < 0 {
		l.add("IoTOptions.Timeout", "%v is negative", o.Timeout)
	}
	if o.RootCAs == nil && o.CAFile != "" {
		if _, err := LoadCAFile(o.CAFile); err != nil {
			l.addAs("IoTOptions.CAFile", err)
		}
	}
	return l.err()
}

// endpointHost checks IoTOptions.Endpoint and returns its host.
func endpointHost(ep string) (string, error) {
	if ep == "" {
		return "", &OptionError{Field: "IoTOptions.Endpoint", Issue: "is empty: give the host from `aws iot describe-endpoint --endpoint-type iot:CredentialProvider`"}
	}
	e, err := endpoint.Parse(ep)
	if err != nil {
		return "", &OptionError{Field: "IoTOptions.Endpoint", Issue: err.Error()}
	}
	return e.Host, nil
}

// validate checks how to reach STS.
func (o STSOptions) validate(l *optionErrors) {
	switch {
	case o.Region == "":
		l.add("STSOptions.Region", "is empty: STS needs a region to sign requests for")
	case !ValidRegion(o.Region):
		l.add("STSOptions.Region", "%q is not an AWS region name like eu-west-1", o.Region)
	}
	if o.Endpoint != "" {
		if u, err := url.Parse(o.Endpoint); err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
			l.add("STSOptions.Endpoint", "%q is not a URL like https://sts.eu-west-1.amazonaws.com", o.Endpoint)
		}
	}
	if o.MaxAttempts < 0 || o.MaxAttempts > 10 {
		l.add("STSOptions.MaxAttempts", "%d: use 1 to 10 (0 for the default)", o.MaxAttempts)
	}
}

// role checks what every kind of assumed role has: ARN, session name and
// duration (0 is the default).
func (l *optionErrors) role(typ, arn, session string, d time.Duration) {
	if !ValidRoleARN(arn) {
		if arn == "" {
			l.add(typ+".RoleARN", "is empty: give the ARN of the role to assume (arn:aws:iam::ACCOUNT:role/NAME)")
		} else {
			l.add(typ+".RoleARN", "%q is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)", arn)
		}
	}
	if !ValidSessionName(session) {
		l.add(typ+".SessionName", "%q is not a valid session name (2-64 of letters, digits and +=,.@-_)", session)
	}
	if d != 0 && (d < MinRoleDuration || d > MaxRoleDuration || d%time.Second != 0) {
		l.add(typ+".Duration", "%v is out of range: STS accepts whole seconds from %v to %v", d, MinRoleDuration, MaxRoleDuration)
	}
}

// policies checks session policies against what STS accepts.
func (l *optionErrors) policies(typ, policy string, arns []string) {
	if policy != "" {
		if _, err := PackPolicy(policy); err != nil {
			l.addAs(typ+".Policy", err)
		}
	}
	if len(arns) > MaxPolicyARNs {
		l.add(typ+".PolicyARNs", "has %d ARNs; STS accepts at most %d", len(arns), MaxPolicyARNs)
	}
	for _, arn := range arns {
		if !validPolicyARN(arn) {
			l.add(typ+".PolicyARNs", "%q is not an IAM policy ARN", arn)
		}
	}
}

// Validate checks the options as NewAssumeRole does, against what STS
// accepts, so that a configuration check reports what AssumeRole would
// refuse. Every problem is reported (errors.Join of *OptionError).
func (o AssumeRoleOptions) Validate() error {
	var l optionErrors
	o.STSOptions.validate(&l)
	l.role("AssumeRoleOptions", o.RoleARN, o.SessionName, o.Duration)
	if o.ExternalID != "" && !validExternalID(o.ExternalID) {
		// Not quoted: an external id is a shared secret of sorts.
		l.add("AssumeRoleOptions.ExternalID", "is not valid (2-1000 of letters, digits and +=,.@:/-)")
	}
	l.policies("AssumeRoleOptions", o.Policy, o.PolicyARNs)
	l.tags("AssumeRoleOptions.", o.Tags, o.TransitiveTagKeys)
	if o.SourceIdentity != "" && !ValidSourceIdentity(o.SourceIdentity) {
		l.add("AssumeRoleOptions.SourceIdentity", "%q is not valid (2-64 of letters, digits and +=,.@-)", o.SourceIdentity)
	}
	switch {
	case o.MFASerial != "" && !validMFASerial(o.MFASerial):
		l.add("AssumeRoleOptions.MFASerial", "%q is not an MFA device serial or ARN", o.MFASerial)
	case o.MFASerial != "" && o.MFAToken == nil:
		l.add("AssumeRoleOptions.MFASerial", "is set but there is no token source")
	case o.MFASerial == "" && o.MFAToken != nil:
		l.add("AssumeRoleOptions.MFASerial", "missing, but an MFA token source is set; give the MFA device's serial or ARN")
	}
	return l.err()
}

// Validate checks the options as NewWebIdentity does.
func (o WebIdentityOptions) Validate() error {
	var l optionErrors
	o.STSOptions.validate(&l)
	l.role("WebIdentityOptions", o.RoleARN, o.SessionName, o.Duration)
	if o.TokenFile == "" {
		l.add("WebIdentityOptions.TokenFile", "is empty: give the file the OIDC token is written to")
	}
	l.policies("WebIdentityOptions", o.Policy, o.PolicyARNs)
	return l.err()
}

// Validate checks the options as NewCommand does.
func (o CommandOptions) Validate() error {
	var l optionErrors
	if err := checkArgv("CommandOptions.Argv", o.Argv); err != nil {
		l = append(l, err)
	}
	if o.Timeout < 0 {
		l.add("CommandOptions.Timeout", "%v is negative", o.Timeout)
	}
	return l.err()
}

// Validate checks the options as NewRefresher does, zero values standing for
// the defaults: the mandatory window at least DefaultMandatoryWindow and
// shorter than the advisory one, jitter at most 0.5, backoff bounds in
// order, no negative fetch timeout.
func (o RefreshOptions) Validate() error {
	var l optionErrors
	if o.Mode != Eager && o.Mode != Deferred {
		l.add("RefreshOptions.Mode", "%v: use Eager or Deferred", o.Mode)
	}
	adv, mand := cmp.Or(o.AdvisoryWindow, DefaultAdvisoryWindow), cmp.Or(o.MandatoryWindow, DefaultMandatoryWindow)
	switch {
	case mand < DefaultMandatoryWindow:
		l.add("RefreshOptions.MandatoryWindow", "%v is below the minimum %v", mand, DefaultMandatoryWindow)
	case adv <= mand:
		l.add("RefreshOptions.MandatoryWindow", "%v must be shorter than the advisory window (%v)", mand, adv)
	}
	if o.Jitter > 0.5 {
		l.add("RefreshOptions.Jitter", "%v exceeds 0.5", o.Jitter)
	}
	if lo, hi := cmp.Or(o.MinBackoff, DefaultMinBackoff), cmp.Or(o.MaxBackoff, DefaultMaxBackoff); lo < 0 || hi < lo {
		l.add("RefreshOptions.MaxBackoff", "MinBackoff %v and MaxBackoff %v: need 0 < MinBackoff <= MaxBackoff", lo, hi)
	}
	if o.FetchTimeout < 0 {
		l.add("RefreshOptions.FetchTimeout", "%v is negative", o.FetchTimeout)
	}
	return l.err()
}
