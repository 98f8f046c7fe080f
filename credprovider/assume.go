package credprovider

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/aws-sdk-go-v2/service/sts/types"
)

// Limits STS puts on AssumeRole sessions.
const (
	MinRoleDuration = 15 * time.Minute
	MaxRoleDuration = 12 * time.Hour
	// MaxChainedDuration is the longest session AWS grants when the caller's
	// own credentials come from a role (role chaining), which includes
	// credentials from the AWS IoT Core credentials provider.
	MaxChainedDuration = time.Hour
	// DefaultRoleDuration is asked for when no duration is given.
	DefaultRoleDuration = time.Hour
	// DefaultSTSAttempts bounds the STS client's own retries of one call;
	// the Refresher retries beyond that with its backoff.
	DefaultSTSAttempts = 3
)

// STSOptions says how to reach STS.
type STSOptions struct {
	// Region signs the requests and, without Endpoint, picks the regional
	// endpoint sts.REGION.amazonaws.com. Required.
	Region string
	// Endpoint overrides the endpoint URL (sts.Options.BaseEndpoint), e.g.
	// a VPC endpoint or a test server.
	Endpoint string
	// HTTPClient defaults to the SDK's.
	HTTPClient aws.HTTPClient
	// MaxAttempts bounds the attempts of one call by the SDK's standard
	// retryer (throttling, 5xx, network errors). Default
	// DefaultSTSAttempts; 1 disables retries.
	MaxAttempts int
}

func (o STSOptions) client(creds aws.CredentialsProvider) (*sts.Client, error) {
	// The caller validated o (AssumeRoleOptions.Validate and the like).
	attempts := o.MaxAttempts
	if attempts == 0 {
		attempts = DefaultSTSAttempts
	}
	so := sts.Options{
		Region:      o.Region,
		Credentials: creds,
		HTTPClient:  o.HTTPClient,
		Retryer: retry.NewStandard(func(ro *retry.StandardOptions) {
			ro.MaxAttempts = attempts
			ro.MaxBackoff = 5 * time.Second
		}),
	}
	if o.Endpoint != "" {
		so.BaseEndpoint = aws.String(o.Endpoint)
	}
	return sts.New(so), nil
}

// AssumeRoleOptions configures an AssumeRole provider. Every AssumeRole
// parameter of STS has a field.
type AssumeRoleOptions struct {
	STSOptions
	// RoleARN is the role to assume. Required.
	RoleARN string
	// SessionName is RoleSessionName (2-64 of letters, digits, +=,.@-_).
	// Required.
	SessionName string
	// Duration is DurationSeconds; 0 asks for DefaultRoleDuration.
	Duration time.Duration
	// ExternalID is sent as ExternalId when set.
	ExternalID string
	// Policy is an inline session policy (JSON).
	Policy string
	// PolicyARNs are managed session policies.
	PolicyARNs []string
	// Tags are session tags; TransitiveTagKeys those of them passed on to
	// roles assumed with the session.
	Tags              map[string]string
	TransitiveTagKeys []string
	// SourceIdentity is sent as SourceIdentity when set.
	SourceIdentity string
	// MFASerial is the MFA device's serial number or ARN (SerialNumber);
	// MFAToken supplies TokenCode and is called at every refresh. Both or
	// neither.
	MFASerial string
	MFAToken  TokenProvider
}

// AssumeRole is an aws.CredentialsProvider that assumes a role with STS
// (through aws-sdk-go-v2's stscreds), signing with the source's credentials.
// Wrap it in a Refresher; the source is asked for credentials at each call,
// so a Refresher as source is never bypassed.
type AssumeRole struct {
	opts   AssumeRoleOptions
	client *sts.Client
	tags   []types.Tag
	arns   []types.PolicyDescriptorType
}

var _ aws.CredentialsProvider = (*AssumeRole)(nil)

// NewAssumeRole validates opts (see AssumeRoleOptions.Validate) and returns
// the provider. Errors are *OptionError, which match ErrInvalidConfig.
func NewAssumeRole(source aws.CredentialsProvider, opts AssumeRoleOptions) (*AssumeRole, error) {
	if source == nil {
		return nil, &OptionError{Field: "NewAssumeRole.source", Issue: "no source credentials provider"}
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.Duration == 0 {
		opts.Duration = DefaultRoleDuration
	}
	if opts.Policy != "" {
		// Sent as STS measures it; Validate checked it packs.
		opts.Policy, _ = PackPolicy(opts.Policy)
	}
	client, err := opts.client(source)
	if err != nil {
		return nil, fmt.Errorf("role %s: %w", opts.RoleARN, err)
	}
	p := &AssumeRole{opts: opts, client: client, arns: policyARNs(opts.PolicyARNs)}
	keys := make([]string, 0, len(opts.Tags))
	for k := range opts.Tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		p.tags = append(p.tags, types.Tag{Key: aws.String(k), Value: aws.String(opts.Tags[k])})
	}
	return p, nil
}

func policyARNs(arns []string) []types.PolicyDescriptorType {
	var out []types.PolicyDescriptorType
	for _, a := range arns {
		out = append(out, types.PolicyDescriptorType{Arn: aws.String(a)})
	}
	return out
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return aws.String(s)
}

// Retrieve assumes the role: it asks the MFA token source for a code (if
// any), then calls STS AssumeRole. Failures are a *RoleError.
func (p *AssumeRole) Retrieve(ctx context.Context) (aws.Credentials, error) {
	o := &p.opts
	var code string
	if o.MFAToken != nil {
		var err error
		if code, err = o.MFAToken(ctx); err != nil {
			return aws.Credentials{}, &RoleError{RoleARN: o.RoleARN, Op: "MFA token", Err: err}
		}
	}
	// A provider per call: stscreds' TokenProvider takes no context, and
	// the code was just fetched with ours.
	prov := stscreds.NewAssumeRoleProvider(p.client, o.RoleARN, func(ao *stscreds.AssumeRoleOptions) {
		ao.RoleSessionName = o.SessionName
		ao.Duration = o.Duration
		ao.ExternalID = optional(o.ExternalID)
		ao.Policy = optional(o.Policy)
		ao.PolicyARNs = p.arns
		ao.Tags = p.tags
		ao.TransitiveTagKeys = o.TransitiveTagKeys
		ao.SourceIdentity = optional(o.SourceIdentity)
		if code != "" {
			ao.SerialNumber = aws.String(o.MFASerial)
			ao.TokenProvider = func() (string, error) { return code, nil }
		}
	})
	c, err := prov.Retrieve(ctx)
	if err != nil {
		return aws.Credentials{}, &RoleError{RoleARN: o.RoleARN, Op: "AssumeRole", Endpoint: o.Endpoint, Err: err}
	}
	return c, nil
}

// String describes the provider without any secret.
func (p *AssumeRole) String() string {
	return fmt.Sprintf("STS AssumeRole (role_arn=%s session=%s region=%s)", p.opts.RoleARN, p.opts.SessionName, p.opts.Region)
}

// RoleError is a failure to assume a role. errors.As reaches the SDK's
// smithy.APIError (Code "AccessDenied", "ExpiredToken", ...) through Err.
type RoleError struct {
	RoleARN string
	// Op is the step that failed: "AssumeRole",
	// "AssumeRoleWithWebIdentity", "MFA token" or "web identity token".
	Op string
	// Endpoint is the configured STS endpoint, "" for the default.
	Endpoint string
	Err      error
}

func (e *RoleError) Error() string {
	at := ""
	if e.Endpoint != "" {
		at = " at " + e.Endpoint
	}
	return fmt.Sprintf("role %s: %s%s: %v", e.RoleARN, e.Op, at, e.Err)
}

func (e *RoleError) Unwrap() error { return e.Err }

// Retryable reports throttling, server errors and network failures (as the
// SDK's standard retryer classifies them) and retryable MFA failures as
// transient; access denied, bad parameters or a bad token are not.
func (e *RoleError) Retryable() bool {
	var r interface{ Retryable() bool }
	if errors.As(e.Err, &r) {
		if _, ok := r.(*RoleError); !ok {
			return r.Retryable()
		}
	}
	return retry.IsErrorRetryables(retry.DefaultRetryables).IsErrorRetryable(e.Err) == aws.TrueTernary
}
