package credprovider

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
)

// WebIdentityOptions configures a WebIdentity provider.
type WebIdentityOptions struct {
	STSOptions
	// RoleARN is the role to assume. Required.
	RoleARN string
	// SessionName is RoleSessionName. Required.
	SessionName string
	// TokenFile holds the OIDC token (a JWT). It is read afresh at every
	// refresh, since whoever writes it (a Kubernetes projected volume, an
	// identity agent) replaces it before it expires.
	TokenFile string
	// Duration is DurationSeconds; 0 asks for DefaultRoleDuration.
	Duration time.Duration
	// Policy and PolicyARNs are session policies.
	Policy     string
	PolicyARNs []string
}

// WebIdentity is an aws.CredentialsProvider that calls STS
// AssumeRoleWithWebIdentity (through aws-sdk-go-v2's stscreds) with the token
// in a file. The request is not signed: the token is the proof.
type WebIdentity struct {
	opts WebIdentityOptions
	prov *stscreds.WebIdentityRoleProvider
}

var _ aws.CredentialsProvider = (*WebIdentity)(nil)

// NewWebIdentity validates opts (see WebIdentityOptions.Validate) and returns
// the provider. Errors are *OptionError, which match ErrInvalidConfig.
func NewWebIdentity(opts WebIdentityOptions) (*WebIdentity, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.Duration == 0 {
		opts.Duration = DefaultRoleDuration
	}
	if opts.Policy != "" {
		opts.Policy, _ = PackPolicy(opts.Policy)
	}
	client, err := opts.client(nil)
	if err != nil {
		return nil, fmt.Errorf("role %s: %w", opts.RoleARN, err)
	}
	prov := stscreds.NewWebIdentityRoleProvider(client, opts.RoleARN, tokenFile(opts.TokenFile), func(o *stscreds.WebIdentityRoleOptions) {
		o.RoleSessionName = opts.SessionName
		o.Duration = opts.Duration
		o.Policy = optional(opts.Policy)
		o.PolicyARNs = policyARNs(opts.PolicyARNs)
	})
	return &WebIdentity{opts: opts, prov: prov}, nil
}

// Retrieve reads the token file and assumes the role. Failures are a
// *RoleError.
func (p *WebIdentity) Retrieve(ctx context.Context) (aws.Credentials, error) {
	// Read once here so that a missing or empty file is reported as such
	// rather than as the SDK's generic wrapping.
	if _, err := tokenFile(p.opts.TokenFile).GetIdentityToken(); err != nil {
		return aws.Credentials{}, &RoleError{RoleARN: p.opts.RoleARN, Op: "web identity token", Err: err}
	}
	c, err := p.prov.Retrieve(ctx)
	if err != nil {
		return aws.Credentials{}, &RoleError{RoleARN: p.opts.RoleARN, Op: "AssumeRoleWithWebIdentity", Endpoint: p.opts.Endpoint, Err: err}
	}
	return c, nil
}

// String describes the provider without any secret.
func (p *WebIdentity) String() string {
	return fmt.Sprintf("STS AssumeRoleWithWebIdentity (role_arn=%s token_file=%s)", p.opts.RoleARN, p.opts.TokenFile)
}

// tokenFile is a stscreds.IdentityTokenRetriever that re-reads the file at
// each call and never quotes the token in an error.
type tokenFile string

func (f tokenFile) GetIdentityToken() ([]byte, error) {
	b, err := os.ReadFile(string(f))
	if err != nil {
		return nil, fmt.Errorf("web_identity_token_file %s: %w", string(f), unwrapPath(err))
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return nil, fmt.Errorf("web_identity_token_file %s is empty", string(f))
	}
	return []byte(tok), nil
}
