package credprovider_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials/ssocreds"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/credprovider"
)

// TestWithSSOLogin ensures that the SDK's failure for a profile whose cached
// SSO sign-in expired, by either of its two paths (sso_session and the
// legacy sso_start_url), is an *SSOLoginError naming the profile and the
// command to run; no request leaves the process.
func TestWithSSOLogin(t *testing.T) {
	for _, tc := range []struct {
		name, config, key string
	}{{
		name: "sso_session",
		config: "[profile dev]\nsso_session = corp\nsso_account_id = 123456789012\nsso_role_name = Gateway\nregion = eu-west-1\n" +
			"[sso-session corp]\nsso_start_url = https://corp.awsapps.com/start\nsso_region = eu-west-1\n",
		key: "corp",
	}, {
		name: "legacy sso_start_url",
		config: "[profile dev]\nsso_start_url = https://corp.awsapps.com/start\nsso_region = eu-west-1\n" +
			"sso_account_id = 123456789012\nsso_role_name = Gateway\nregion = eu-west-1\n",
		key: "https://corp.awsapps.com/start",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			home := t.TempDir()
			t.Setenv("HOME", home)
			t.Setenv("AWS_CONFIG_FILE", filepath.Join(home, "config"))
			t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(home, "credentials"))
			require.NoError(t, os.WriteFile(filepath.Join(home, "config"), []byte(tc.config), 0o600))
			cache, err := ssocreds.StandardCachedTokenFilepath(tc.key)
			require.NoError(t, err)
			require.NoError(t, os.MkdirAll(filepath.Dir(cache), 0o700))
			expired := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
			require.NoError(t, os.WriteFile(cache, []byte(`{"accessToken":"secret-token","expiresAt":"`+expired.Format(time.RFC3339)+`"}`), 0o600))

			ctx := context.Background()
			cfg, err := config.LoadDefaultConfig(ctx, config.WithSharedConfigProfile("dev"))
			require.NoError(t, err)
			p := credprovider.WithSSOLogin(cfg.Credentials, credprovider.SSOProfile{Name: "dev", CacheKey: tc.key})
			_, err = p.Retrieve(ctx)
			var sso *credprovider.SSOLoginError
			require.True(t, errors.As(err, &sso), "%v", err)
			assert.Equal(t, "dev", sso.Profile)
			assert.True(t, sso.Expired.Equal(expired), "%v", sso.Expired)
			assert.Equal(t, "run `aws sso login --profile dev` as the user tether runs as", sso.Fix())
			assert.Contains(t, err.Error(), "profile dev has an SSO sign-in that expired at")
			assert.NotContains(t, err.Error(), "secret-token")
			assert.False(t, credprovider.IsRetryable(err))

			require.NoError(t, os.Remove(cache))
			_, err = p.Retrieve(ctx)
			require.True(t, errors.As(err, &sso), "%v", err)
			assert.Contains(t, err.Error(), "profile dev has no SSO sign-in cached")
		})
	}
}

// TestClassifySSOLeavesOtherErrors ensures that a failure unrelated to the
// sign-in (the cached token is fresh) is returned unchanged.
func TestClassifySSOLeavesOtherErrors(t *testing.T) {
	t.Setenv("HOME", t.TempDir())
	cache, err := ssocreds.StandardCachedTokenFilepath("corp")
	require.NoError(t, err)
	require.NoError(t, os.MkdirAll(filepath.Dir(cache), 0o700))
	fresh := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	require.NoError(t, os.WriteFile(cache, []byte(`{"accessToken":"x","expiresAt":"`+fresh+`"}`), 0o600))
	other := errors.New("AccessDenied")
	assert.Same(t, other, credprovider.ClassifySSO(credprovider.SSOProfile{Name: "dev", CacheKey: "corp"}, other))
}
