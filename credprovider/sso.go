package credprovider

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials/ssocreds"
)

// SSOProfile names a shared-config profile that signs in with AWS IAM
// Identity Center (SSO), so that its failures can name it.
type SSOProfile struct {
	// Name is the profile, as in `aws sso login --profile NAME`.
	Name string
	// CacheKey is what the SDK names the profile's token after in
	// ~/.aws/sso/cache: its sso_session, or its legacy sso_start_url.
	CacheKey string
}

// SSOLoginError is the failure of a profile's credentials because its SSO
// sign-in has expired or was never made: the cached token is missing or
// expired and cannot be refreshed. Only a person can fix it, by signing in
// again as the user the program runs as.
type SSOLoginError struct {
	Profile string
	// Expired is when the cached token expired; zero when there is none.
	Expired time.Time
	// Err is the SDK's own error.
	Err error
}

func (e *SSOLoginError) Error() string {
	what := "has no SSO sign-in cached"
	if !e.Expired.IsZero() {
		what = "has an SSO sign-in that expired at " + e.Expired.UTC().Format(time.RFC3339)
	}
	return fmt.Sprintf("profile %s %s: %s (%v)", e.Profile, what, e.Fix(), e.Err)
}

// Fix says what to run, as the user whose ~/.aws/sso/cache the profile reads.
func (e *SSOLoginError) Fix() string {
	return "run `aws sso login --profile " + e.Profile + "` as the user tether runs as"
}

func (e *SSOLoginError) Unwrap() error { return e.Err }

// Retryable is false: the sign-in does not come back by itself (a retry
// after someone signs in does succeed).
func (e *SSOLoginError) Retryable() bool { return false }

// WithSSOLogin wraps p, the SDK's credentials for profile, so that a
// failure caused by a missing or expired sign-in is an *SSOLoginError
// that names the profile and the command that fixes it. The SDK reports it
// either as an *ssocreds.InvalidTokenError (legacy sso_start_url profiles)
// or as a plain error from its token provider (sso_session profiles); in
// the second case the cached token itself is looked at.
func WithSSOLogin(p aws.CredentialsProvider, profile SSOProfile) aws.CredentialsProvider {
	return ssoProvider{p: p, profile: profile}
}

type ssoProvider struct {
	p       aws.CredentialsProvider
	profile SSOProfile
}

func (s ssoProvider) Retrieve(ctx context.Context) (aws.Credentials, error) {
	c, err := s.p.Retrieve(ctx)
	if err != nil {
		return c, ClassifySSO(s.profile, err)
	}
	return c, nil
}

// ClassifySSO returns err as an *SSOLoginError when it is the failure of
// profile's sign-in, and err unchanged otherwise.
func ClassifySSO(profile SSOProfile, err error) error {
	var inv *ssocreds.InvalidTokenError
	expired, stale := ssoTokenExpired(profile.CacheKey)
	if errors.As(err, &inv) || stale {
		return &SSOLoginError{Profile: profile.Name, Expired: expired, Err: err}
	}
	return err
}

// ssoTokenExpired reads the cached token's expiry: stale is true when the
// token is absent or expired (expired is then its expiry, if it has one).
func ssoTokenExpired(key string) (expired time.Time, stale bool) {
	if key == "" {
		return time.Time{}, false
	}
	path, err := ssocreds.StandardCachedTokenFilepath(key)
	if err != nil {
		return time.Time{}, false
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return time.Time{}, true
	}
	if err != nil {
		return time.Time{}, false
	}
	var t struct {
		ExpiresAt time.Time `json:"expiresAt"`
	}
	if json.Unmarshal(b, &t) != nil || t.ExpiresAt.IsZero() {
		return time.Time{}, false
	}
	return t.ExpiresAt, time.Now().After(t.ExpiresAt)
}
