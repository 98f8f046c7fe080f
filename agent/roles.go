package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"

	"github.com/tetherd/tether/credprovider"
)

// mfaTimeout bounds one run of an mfa_command: a code is good for ~30 s, so
// a command that takes longer is of no use anyway.
const mfaTimeout = 30 * time.Second

// buildExtraRoles adds the [[role]] sections, each built from its source and
// refreshed like the device role.
func (a *Agent) buildExtraRoles(device aws.CredentialsProvider) error {
	a.workloads = newWorkloadSet()
	a.warnHiddenPeers()
	return buildRoleProviders(a.cfg, device, func(r *RoleConfig, p aws.CredentialsProvider) (aws.CredentialsProvider, error) {
		rl, err := a.addRole(r.Name, a.roleKey(r), p, r.Source, AllowList{UIDs: r.AllowUIDs, GIDs: r.AllowGIDs})
		if err != nil {
			return nil, err
		}
		if r.workload != "" {
			rl.workload = r.workload
			i := slices.IndexFunc(a.cfg.Workloads, func(w WorkloadConfig) bool { return w.Name == r.workload })
			a.workloads.add(&a.cfg.Workloads[i], rl)
		}
		return rl.ref, nil
	})
}

// buildRoleProviders builds the provider of each [[role]] of cfg from its
// source and hands it to add, whose result is what roles sourced from it
// sign with. Roles sourced from other roles are built after them
// (validation has ruled out loops and unknown sources); the SDK's shared
// configuration is loaded only for roles whose source is a profile.
func buildRoleProviders(cfg *Config, device aws.CredentialsProvider, add func(*RoleConfig, aws.CredentialsProvider) (aws.CredentialsProvider, error)) error {
	built := map[string]aws.CredentialsProvider{DeviceRole: device}
	profiles := map[string]aws.CredentialsProvider{}
	// Workloads' sessions of a role are built from the same source.
	pending := append(append([]RoleConfig(nil), cfg.Roles...), cfg.scopedRoles()...)
	for len(pending) > 0 {
		var next []RoleConfig
		for _, r := range pending {
			var source aws.CredentialsProvider
			switch r.Source.Kind {
			case SourceRole:
				s, ok := built[r.Source.Name]
				if !ok {
					next = append(next, r)
					continue
				}
				source = s
			case SourceProfile:
				name := r.Source.Name
				if needsSource(&r) {
					s, ok := profiles[name]
					if !ok {
						var err error
						if s, err = profileCredentials(name, r.Region); err != nil {
							return configFailure("role %s: source: %w", r.Name, err)
						}
						profiles[name] = s
					}
					source = s
				}
			default:
				source = device
			}
			p, err := roleProvider(&r, source)
			if err != nil {
				return configFailure("role %s: %w", r.Name, optionsError("", roleKeys, err))
			}
			if built[r.Name], err = add(&r, p); err != nil {
				return err
			}
		}
		if len(next) == len(pending) {
			return configFailure("role %s: source %s cannot be resolved (a loop?)", next[0].Name, next[0].Source)
		}
		pending = next
	}
	return nil
}

// roleKey is what decides a [[role]]'s credentials: its own settings and,
// for a chain, what its source's credentials depend on. Its source, when a
// role, is built already.
func (a *Agent) roleKey(r *RoleConfig) credentialsKey {
	k := credentialsKey{
		RoleARN: r.RoleARN, SessionName: r.SessionName, ExternalID: r.ExternalID, Policy: r.Policy,
		PolicyARNs: r.PolicyARNs, Tags: r.Tags, TransitiveTagKeys: r.TransitiveTagKeys,
		SourceIdentity: r.SourceIdentity, MFASerial: r.MFASerial, WebIdentityTokenFile: r.WebIdentityTokenFile,
		CredentialCommand: r.CredentialCommand, Duration: r.Duration.Duration,
	}
	switch {
	case !needsSource(r):
	case r.Source.Kind == SourceDevice:
		k.Source = a.roles[DeviceRole].cacheKey
	case r.Source.Kind == SourceRole:
		k.Source = a.roles[r.Source.Name].cacheKey
	default:
		k.Source = r.Source.String()
	}
	return k
}

// needsSource reports whether r signs its requests with a source's
// credentials: credential_command and web identity roles do not.
func needsSource(r *RoleConfig) bool {
	return len(r.CredentialCommand) == 0 && r.WebIdentityTokenFile == ""
}

// profileCredentials resolves a profile of the shared config files with the
// SDK's own providers (static keys, SSO, assume role, credential_process).
func profileCredentials(profile, region string) (aws.CredentialsProvider, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg, err := config.LoadDefaultConfig(ctx, config.WithSharedConfigProfile(profile), config.WithRegion(region))
	if err != nil {
		var missing config.SharedConfigProfileNotExistError
		if errors.As(err, &missing) {
			return nil, fmt.Errorf("profile %q is not in the shared config files (%s); add it or fix the source", profile, strings.Join(sharedConfigFiles(), ", "))
		}
		return nil, fmt.Errorf("profile %q: %w", profile, err)
	}
	if cfg.Credentials == nil {
		return nil, fmt.Errorf("profile %q resolves to no credentials", profile)
	}
	// A sign-in that expired is named with its profile and the fix, not
	// with the SDK's chain of wrapped messages.
	if sc, err := config.LoadSharedConfigProfile(ctx, profile); err == nil {
		key := sc.SSOSessionName
		if key == "" {
			key = sc.SSOStartURL
		}
		if key != "" {
			return credprovider.WithSSOLogin(cfg.Credentials, credprovider.SSOProfile{Name: profile, CacheKey: key}), nil
		}
	}
	return cfg.Credentials, nil
}

// roleProvider returns the credentials provider a [[role]] describes.
func roleProvider(r *RoleConfig, source aws.CredentialsProvider) (aws.CredentialsProvider, error) {
	switch {
	case len(r.CredentialCommand) > 0:
		return credprovider.NewCommand(commandOptions(r))
	case r.WebIdentityTokenFile != "":
		return credprovider.NewWebIdentity(webIdentityOptions(r))
	}
	o := assumeRoleOptions(r)
	var err error
	if o.MFAToken, err = mfaToken(r); err != nil {
		return nil, err
	}
	return credprovider.NewAssumeRole(source, o)
}

// The options a [[role]] gives credprovider, built in one place for the
// providers and for validation, so both judge the same values.

func commandOptions(r *RoleConfig) credprovider.CommandOptions {
	return credprovider.CommandOptions{Argv: r.CredentialCommand}
}

func stsOptions(r *RoleConfig) credprovider.STSOptions {
	return credprovider.STSOptions{Region: r.Region, Endpoint: r.STSEndpoint}
}

func webIdentityOptions(r *RoleConfig) credprovider.WebIdentityOptions {
	return credprovider.WebIdentityOptions{
		STSOptions: stsOptions(r), RoleARN: r.RoleARN, SessionName: r.SessionName, TokenFile: r.WebIdentityTokenFile,
		Duration: r.Duration.Duration, Policy: r.Policy, PolicyARNs: r.PolicyARNs,
	}
}

// assumeRoleOptions leaves MFAToken to mfaToken, which reads files.
func assumeRoleOptions(r *RoleConfig) credprovider.AssumeRoleOptions {
	return credprovider.AssumeRoleOptions{
		STSOptions: stsOptions(r), RoleARN: r.RoleARN, SessionName: r.SessionName, Duration: r.Duration.Duration,
		ExternalID: r.ExternalID, Policy: r.Policy, PolicyARNs: r.PolicyARNs, Tags: r.Tags,
		TransitiveTagKeys: r.TransitiveTagKeys, SourceIdentity: r.SourceIdentity, MFASerial: r.MFASerial,
	}
}

// mfaToken is the role's MFA token source, nil when it has none.
func mfaToken(r *RoleConfig) (credprovider.TokenProvider, error) {
	switch {
	case len(r.MFACommand) > 0:
		return credprovider.MFACommand(r.MFACommand, mfaTimeout)
	case r.MFATOTPFile != "":
		return credprovider.TOTPFile(r.MFATOTPFile, nil)
	}
	return nil, nil
}

// sharedConfigFiles names the files the SDK reads profiles from, for errors.
func sharedConfigFiles() []string {
	files := []string{config.DefaultSharedConfigFilename(), config.DefaultSharedCredentialsFilename()}
	if f := os.Getenv("AWS_CONFIG_FILE"); f != "" {
		files[0] = f
	}
	if f := os.Getenv("AWS_SHARED_CREDENTIALS_FILE"); f != "" {
		files[1] = f
	}
	return files
}

// checkProfile reports whether the shared config files define profile; it
// is called by validation only when a role's source is that profile.
func checkProfile(profile string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	files := sharedConfigFiles()
	_, err := config.LoadSharedConfigProfile(ctx, profile, func(o *config.LoadSharedConfigOptions) {
		o.ConfigFiles, o.CredentialsFiles = files[:1], files[1:]
	})
	var missing config.SharedConfigProfileNotExistError
	if errors.As(err, &missing) {
		return fmt.Errorf("profile %q is not in the shared config files (%s); add it or fix the source", profile, strings.Join(files, ", "))
	}
	if err != nil {
		return fmt.Errorf("profile %q: %v", profile, err)
	}
	return nil
}
