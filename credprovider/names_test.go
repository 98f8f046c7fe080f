package credprovider

import (
	"regexp"
	"strings"
	"testing"
)

// TestNameRulesMatchAWSPatterns ensures that each byte-by-byte check accepts
// exactly what the AWS-documented pattern it replaces accepts, on valid
// names, each boundary length and each kind of stray byte.
func TestNameRulesMatchAWSPatterns(t *testing.T) {
	rules := []struct {
		name    string
		pattern string
		check   func(string) bool
		valid   []string
	}{
		{"region", `^[a-z]{2}(-[a-z]+)+-\d$`, ValidRegion, []string{"eu-west-1", "us-gov-east-1", "ap-southeast-2"}},
		{"role ARN", `^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$`, ValidRoleARN,
			[]string{"arn:aws:iam::123456789012:role/telemetry", "arn:aws-us-gov:iam::123456789012:role/a/b+c=d,e.f@g-h_i"}},
		{"session name", `^[\w+=,.@-]{2,64}$`, ValidSessionName, []string{"tether-gw-0001", "a@b.c"}},
		{"thing name", `^[a-zA-Z0-9:_-]{1,128}$`, validThingName, []string{"gw-0001", "a:b_c"}},
		{"role alias", `^[\w=,@-]{1,128}$`, validRoleAlias, []string{"gateway-role", "a=b,c@d"}},
		{"policy ARN", `^arn:aws[a-z-]*:iam::(aws|\d{12}):policy/[\w+=,.@/-]{1,512}$`, validPolicyARN,
			[]string{"arn:aws:iam::aws:policy/ReadOnlyAccess", "arn:aws-cn:iam::123456789012:policy/p/q"}},
		{"MFA serial", `^[\w+=/:,.@-]{9,256}$`, validMFASerial, []string{"arn:aws:iam::123456789012:mfa/op", "GAHT12345678"}},
		{"external id", `^[\w+=,.@:/-]{2,1000}$`, validExternalID, []string{"ext-id:1/2"}},
		{"source identity", `^[\w+=,.@-]{2,64}$`, ValidSourceIdentity, []string{"operator@example.com"}},
		{"tag key", `^[\p{L}\p{Z}\p{N}_.:/=+\-@]{1,128}$`, func(s string) bool { return validTag(s, 1, MaxTagKeyLength) }, []string{"unit", "Projekt Größe", "a:b/c=d+e-f@g_h.i", "名前"}},
		{"tag value", `^[\p{L}\p{Z}\p{N}_.:/=+\-@]{0,256}$`, func(s string) bool { return validTag(s, 0, MaxTagValueLength) }, []string{"telemetry.service", "x y"}},
	}
	// Near misses of each form, checked against every rule.
	tricky := []string{"eu-1", "eu--west-1", "eu-west-12", "e-west-1", "eu-west-", "-eu-west-1", "eu-west1",
		"arn:aws:iam::12345678901:role/x", "arn:aws:iam::1234567890123:role/x", "arn:aws:iam::123456789012:role/",
		"arn:awsX:iam::123456789012:role/x", "arn:aws-:iam::123456789012:role/x", "arn:aws:iam:123456789012:role/x",
		"arn:aws:iam::aws:role/x", "arn:aws:iam::123456789012:policy/x", "arn:aws:iam::123456789012:user/x",
		"arn:aws:sts::123456789012:role/x", "arn:aws:iam::123456789012:role/x:y", "arn:aws:iam::123456789012:role/role/x"}
	strays := []string{"", " ", "\n", "é", "\xff", "\u00a0", "²", "!", "\u200b", "*", "#", "%", "A", "a", "0", "_", ":", "/", "-", "aws", "\x00"}
	for _, r := range rules {
		re := regexp.MustCompile(r.pattern)
		inputs := append([]string(nil), tricky...)
		for _, v := range r.valid {
			if !r.check(v) {
				t.Errorf("%s: %q refused", r.name, v)
			}
			inputs = append(inputs, v, v+"\n", "\n"+v, strings.ToUpper(v), v[:len(v)-1], v[1:])
			for _, s := range strays {
				for _, at := range []int{0, 1, len(v) / 2, len(v) - 1, len(v)} {
					inputs = append(inputs, v[:at]+s+v[at:], v[:at]+s)
				}
			}
		}
		for _, n := range []int{1, 2, 8, 9, 36, 64, 65, 128, 129, 256, 257, 512, 513, 1000, 1001} {
			inputs = append(inputs, strings.Repeat("a", n), "arn:aws:iam::123456789012:role/"+strings.Repeat("r", n),
				"arn:aws:iam::aws:policy/"+strings.Repeat("p", n))
		}
		for _, in := range inputs {
			if got, want := r.check(in), re.MatchString(in); got != want {
				t.Errorf("%s: %q: check says %v, %s says %v", r.name, in, got, r.pattern, want)
			}
		}
	}
}
