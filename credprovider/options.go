package credprovider

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"time"

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
		if !json.Valid([]byte(policy)) {
			l.add(typ+".Policy", "is not valid JSON; give an IAM policy document")
		} else if len(policy) > MaxSessionPolicyBytes {
			l.add(typ+".Policy", "is %d bytes; STS accepts at most %d", len(policy), MaxSessionPolicyBytes)
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
	if len(o.Tags) > MaxSessionTags {
		l.add("AssumeRoleOptions.Tags", "has %d tags; STS accepts at most %d", len(o.Tags), MaxSessionTags)
	}
	for k, v := range o.Tags {
		if k == "" || len(k) > MaxTagKeyLength || len(v) > MaxTagValueLength {
			l.add("AssumeRoleOptions.Tags", "tag %q: keys are 1-%d characters, values at most %d", k, MaxTagKeyLength, MaxTagValueLength)
		}
	}
	for _, k := range o.TransitiveTagKeys {
		if _, ok := o.Tags[k]; !ok {
			l.add("AssumeRoleOptions.TransitiveTagKeys", "%q is not one of the tag keys", k)
		}
	}
	if o.SourceIdentity != "" && !validSourceIdentity(o.SourceIdentity) {
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
