package agent

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/tetherd/tether/hsm"
	"github.com/tetherd/tether/hsm/tpm"
)

// openIdentity opens the device identity as every generation does: an
// absent token is a runtime failure (exit 1, retried by the service
// manager), anything else the configuration's (exit 2).
func openIdentity(ctx context.Context, cfg *Config, log *slog.Logger) (*hsm.Identity, error) {
	id, err := hsm.Open(ctx, cfg.Identity.Certificate, cfg.Identity.PrivateKey, hsm.WithLogger(log))
	if err != nil {
		if errors.Is(err, hsm.ErrTokenUnavailable) {
			return nil, runtimeFailure("identity: %w", err)
		}
		return nil, configFailure("identity: %w", err)
	}
	return id, nil
}

// Check opens what a valid cfg names the way `tether run` opens it, and
// starts nothing: the identity (certificate and key, checked to be valid now
// and to belong together; a token key is opened once, with the logins a
// start makes, and a refused PIN is never tried again), then the credentials
// provider of every role. No request leaves the device, no file is written,
// and the state store is not opened (a running agent holds its lock).
// Failures are *ExitError, as Run's: 2 for the configuration, 1 for a token
// that is absent. log receives warnings (nil discards them).
//
// A PIN that is a systemd credential can only be read inside the service;
// outside it (no $CREDENTIALS_DIRECTORY) the identity is not opened, and
// Check says so on log.
func Check(ctx context.Context, cfg *Config, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var device aws.CredentialsProvider = aws.AnonymousCredentials{}
	if name, ok := credentialPIN(cfg.Identity.PrivateKey); ok && os.Getenv("CREDENTIALS_DIRECTORY") == "" {
		log.Warn("the identity was not opened: its PIN is the systemd credential "+name+", which only the service can read; "+
			"to check it too, run the check as the service: systemd-run --pipe --wait -p LoadCredential="+name+":/etc/tether/pin tether config check",
			"key", hsm.RedactURI(cfg.Identity.PrivateKey))
	} else {
		id, err := openIdentity(ctx, cfg, log)
		if err != nil {
			return err
		}
		defer id.Close()
		if device, err = NewDeviceProvider(cfg, id); err != nil {
			return err
		}
	}
	return buildRoleProviders(cfg, device, func(_ *RoleConfig, p aws.CredentialsProvider) (aws.CredentialsProvider, error) {
		return p, nil
	})
}

// credentialPIN returns the systemd credential a pkcs11: or tpm: key's PIN
// comes from, if it does.
func credentialPIN(key string) (string, bool) {
	var src string
	switch {
	case tpm.IsURI(key):
		u, err := tpm.ParseURI(key)
		if err != nil {
			return "", false
		}
		src = u.PINSource
	case hsm.IsURI(key):
		u, err := hsm.ParseKeyURI(key)
		if err != nil {
			return "", false
		}
		src = u.PINSource
	}
	return strings.CutPrefix(src, "credential:")
}
