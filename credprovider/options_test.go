package credprovider_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/credprovider"
	"github.com/tetherd/tether/credprovider/iotcredtest"
)

// fields lists the Go names of the options err refuses.
func fields(t *testing.T, err error) []string {
	t.Helper()
	var out []string
	var walk func(error)
	walk = func(e error) {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		var oe *credprovider.OptionError
		require.ErrorAs(t, e, &oe)
		assert.ErrorIs(t, e, credprovider.ErrInvalidConfig)
		out = append(out, oe.Field)
	}
	walk(err)
	return out
}

// TestAssumeRoleOptionsValidate ensures that every limit STS puts on a
// session is checked before any request, that each refusal names the Go
// option at fault, and that all of them are reported at once.
func TestAssumeRoleOptionsValidate(t *testing.T) {
	token := credprovider.TokenProvider(func(context.Context) (string, error) { return "123456", nil })
	ok := credprovider.AssumeRoleOptions{STSOptions: credprovider.STSOptions{Region: "eu-west-1"}, RoleARN: roleA, SessionName: "s1",
		ExternalID: "ext-1", Policy: `{"Version":"2012-10-17"}`, PolicyARNs: []string{"arn:aws:iam::aws:policy/ReadOnlyAccess"},
		Tags: map[string]string{"site": "a"}, TransitiveTagKeys: []string{"site"}, SourceIdentity: "gw-1",
		MFASerial: "arn:aws:iam::123456789012:mfa/gw", MFAToken: token}
	require.NoError(t, ok.Validate())
	many := func(n int, f func(int) string) []string {
		var s []string
		for i := range n {
			s = append(s, f(i))
		}
		return s
	}
	tags := map[string]string{}
	for i := range 51 {
		tags[fmt.Sprint(i)] = "v"
	}
	for _, tc := range []struct {
		name  string
		edit  func(*credprovider.AssumeRoleOptions)
		field string
	}{
		{"policy not JSON", func(o *credprovider.AssumeRoleOptions) { o.Policy = "{" }, "AssumeRoleOptions.Policy"},
		{"policy too long", func(o *credprovider.AssumeRoleOptions) { o.Policy = `"` + strings.Repeat("x", 2048) + `"` }, "AssumeRoleOptions.Policy"},
		{"11 policy ARNs", func(o *credprovider.AssumeRoleOptions) {
			o.PolicyARNs = many(11, func(i int) string { return fmt.Sprintf("arn:aws:iam::aws:policy/P%d", i) })
		}, "AssumeRoleOptions.PolicyARNs"},
		{"not a policy ARN", func(o *credprovider.AssumeRoleOptions) { o.PolicyARNs = []string{roleA} }, "AssumeRoleOptions.PolicyARNs"},
		{"51 tags", func(o *credprovider.AssumeRoleOptions) { o.Tags, o.TransitiveTagKeys = tags, nil }, "AssumeRoleOptions.Tags"},
		{"long tag value", func(o *credprovider.AssumeRoleOptions) { o.Tags = map[string]string{"site": strings.Repeat("v", 257)} }, "AssumeRoleOptions.Tags"},
		{"tag key grammar", func(o *credprovider.AssumeRoleOptions) {
			o.Tags, o.TransitiveTagKeys = map[string]string{"a,b": "v"}, nil
		}, "AssumeRoleOptions.Tags"},
		{"tag value grammar", func(o *credprovider.AssumeRoleOptions) { o.Tags = map[string]string{"site": `a\x2db`} }, "AssumeRoleOptions.Tags"},
		{"aws: tag key", func(o *credprovider.AssumeRoleOptions) {
			o.Tags, o.TransitiveTagKeys = map[string]string{"AWS:x": "v"}, nil
		}, "AssumeRoleOptions.Tags"},
		{"tag keys differing in case", func(o *credprovider.AssumeRoleOptions) {
			o.Tags, o.TransitiveTagKeys = map[string]string{"Site": "a", "site": "b"}, nil
		}, "AssumeRoleOptions.Tags"},
		{"policy character", func(o *credprovider.AssumeRoleOptions) { o.Policy = `{"Sid":"☃"}` }, "AssumeRoleOptions.Policy"},
		{"external id", func(o *credprovider.AssumeRoleOptions) { o.ExternalID = "x" }, "AssumeRoleOptions.ExternalID"},
		{"source identity", func(o *credprovider.AssumeRoleOptions) { o.SourceIdentity = "a b" }, "AssumeRoleOptions.SourceIdentity"},
		{"MFA serial", func(o *credprovider.AssumeRoleOptions) { o.MFASerial = "short" }, "AssumeRoleOptions.MFASerial"},
		{"token without serial", func(o *credprovider.AssumeRoleOptions) { o.MFASerial = "" }, "AssumeRoleOptions.MFASerial"},
		{"max attempts", func(o *credprovider.AssumeRoleOptions) { o.MaxAttempts = 11 }, "STSOptions.MaxAttempts"},
		{"fractional duration", func(o *credprovider.AssumeRoleOptions) { o.Duration = time.Hour + time.Millisecond }, "AssumeRoleOptions.Duration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := ok
			tc.edit(&o)
			assert.Equal(t, []string{tc.field}, fields(t, o.Validate()))
			_, err := credprovider.NewAssumeRole(static(aws.Credentials{}), o)
			assert.Equal(t, []string{tc.field}, fields(t, err), "NewAssumeRole refuses what Validate refuses")
		})
	}
	spaced := ok
	spaced.Policy = "{\"Statement\": " + strings.Repeat(" ", 3000) + `"x"}`
	assert.NoError(t, spaced.Validate(), "white space does not count towards the policy's size")
	all := credprovider.AssumeRoleOptions{RoleARN: "x", SessionName: "y"}
	assert.ElementsMatch(t, []string{"STSOptions.Region", "AssumeRoleOptions.RoleARN", "AssumeRoleOptions.SessionName"}, fields(t, all.Validate()))
}

// TestIoTOptionsValidate ensures that the IoT options are checked, CA file
// included, without a device certificate, and that a CA bundle with one
// broken certificate is refused rather than trusted in part.
func TestIoTOptionsValidate(t *testing.T) {
	pki, err := iotcredtest.NewPKI()
	require.NoError(t, err)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.pem")
	require.NoError(t, os.WriteFile(good, pki.CAPEM, 0o644))
	broken := filepath.Join(dir, "broken.pem")
	require.NoError(t, os.WriteFile(broken, append(pki.CAPEM, []byte("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGUgZGVy\n-----END CERTIFICATE-----\n")...), 0o644))
	ok := credprovider.IoTOptions{Endpoint: "c1.credentials.iot.eu-west-1.amazonaws.com", RoleAlias: "gw-role", ThingName: "gw-1", CAFile: good}
	require.NoError(t, ok.Validate())
	for _, tc := range []struct {
		name  string
		edit  func(*credprovider.IoTOptions)
		field string
	}{
		{"broken CA block", func(o *credprovider.IoTOptions) { o.CAFile = broken }, "IoTOptions.CAFile"},
		{"role alias", func(o *credprovider.IoTOptions) { o.RoleAlias = "a/b" }, "IoTOptions.RoleAlias"},
		{"thing name", func(o *credprovider.IoTOptions) { o.ThingName = "gw 1" }, "IoTOptions.ThingName"},
		{"host name", func(o *credprovider.IoTOptions) { o.Endpoint = "bad_host.example.com" }, "IoTOptions.Endpoint"},
		{"timeout", func(o *credprovider.IoTOptions) { o.Timeout = -time.Second }, "IoTOptions.Timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := ok
			tc.edit(&o)
			assert.Equal(t, []string{tc.field}, fields(t, o.Validate()))
		})
	}
	_, err = credprovider.LoadCAFile(broken)
	var oe *credprovider.OptionError
	require.True(t, errors.As(err, &oe))
	assert.Contains(t, oe.Issue, "certificate 2")
}

// TestIdentifiersOf ensures that any text, a systemd unit with escapes or a
// thing name with colons, becomes a SourceIdentity and a tag value that STS
// accepts.
func TestIdentifiersOf(t *testing.T) {
	for _, tc := range []struct{ in, si, tag string }{
		{"uploader.service", "uploader.service", "uploader.service"},
		{`dev-sda\x2d1.mount`, "dev-sda_x2d1.mount", "dev-sda_x2d1.mount"},
		{"thing:a", "thing_a", "thing:a"},
		{"a b,c", "a_b,c", "a b_c"},
		{strings.Repeat("x", 300), strings.Repeat("x", 64), strings.Repeat("x", 256)},
	} {
		si, tag := credprovider.SourceIdentityOf(tc.in), credprovider.TagValueOf(tc.in)
		assert.Equal(t, tc.si, si, tc.in)
		assert.Equal(t, tc.tag, tag, tc.in)
		o := credprovider.AssumeRoleOptions{STSOptions: credprovider.STSOptions{Region: "eu-west-1"}, RoleARN: roleA,
			SessionName: si, SourceIdentity: si, Tags: map[string]string{"k": tag}}
		assert.NoError(t, o.Validate(), tc.in)
	}
}
