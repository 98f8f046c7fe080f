package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"

	"github.com/tetherd/tether/agent"
	"github.com/tetherd/tether/credprovider"
	"github.com/tetherd/tether/hsm"
)

// processCredentials is the JSON credential_process must print
// (Version 1 of the AWS SDKs' process credential provider).
type processCredentials struct {
	Version         int    `json:"Version"`
	AccessKeyID     string `json:"AccessKeyId"`
	SecretAccessKey string `json:"SecretAccessKey"`
	SessionToken    string `json:"SessionToken"`
	Expiration      string `json:"Expiration"`
}

const defaultSocket = "/run/tether/tether.sock"

// runCredentialProcess implements `tether credential-process`: from the
// running agent through its socket, or with --direct by fetching itself.
func runCredentialProcess(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("credential-process", stderr)
	role := fs.String("role", "", "role `name` ([[role]] name, or device; default: this program's [[workload]] role, else device)")
	socket := fs.String("socket", defaultSocket, "the agent's Unix socket `path`")
	direct := fs.Bool("direct", false, "fetch from the credentials provider without an agent")
	file := fs.String("c", agent.DefaultConfigPath, "configuration `file` (with --direct)")
	timeout := fs.Duration("timeout", 10*time.Second, "with --direct, how long to retry retryable failures")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "tether credential-process: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	var out processCredentials
	if *direct {
		c, code := directCredentials(ctx, *file, *role, *timeout, stderr)
		if code != exitOK {
			return code
		}
		out = processCredentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey,
			SessionToken: c.SessionToken, Expiration: c.Expires.UTC().Format(time.RFC3339)}
	} else {
		c, err := agent.FetchCredentials(ctx, *socket, *role)
		if err != nil {
			fmt.Fprintf(stderr, "tether credential-process: %v\n", err)
			var ae *agent.APIError
			if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
				return exitUsage // no such role: fix --role or the configuration
			}
			return exitRuntime
		}
		out = processCredentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey,
			SessionToken: c.Token, Expiration: c.Expiration}
	}
	out.Version = 1
	b, _ := json.Marshal(out)
	fmt.Fprintf(stdout, "%s\n", b)
	return exitOK
}

// directCredentials fetches the device role's credentials with the
// configuration alone, retrying retryable failures with exponential backoff
// and full jitter until timeout.
func directCredentials(ctx context.Context, file, role string, timeout time.Duration, stderr io.Writer) (creds aws.Credentials, code int) {
	cfg, err := agent.LoadConfig(file)
	if err != nil {
		reportConfigError(stderr, err)
		return creds, exitUsage
	}
	if role != "" && role != agent.DeviceRole {
		fmt.Fprintf(stderr, "tether credential-process: --direct serves the device role only; ask the running agent for role %q\n", role)
		return creds, exitUsage
	}
	id, err := hsm.Open(ctx, cfg.Identity.Certificate, cfg.Identity.PrivateKey)
	if err != nil {
		fmt.Fprintf(stderr, "tether credential-process: identity: %v\n", err)
		if errors.Is(err, hsm.ErrTokenUnavailable) {
			return creds, exitRuntime
		}
		return creds, exitUsage
	}
	defer id.Close()
	p, err := agent.NewDeviceProvider(cfg, id)
	if err != nil {
		fmt.Fprintf(stderr, "tether credential-process: %v\n", err)
		return creds, exitUsage
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	backoff := retry.NewExponentialJitterBackoff(2 * time.Second)
	for attempt := 1; ; attempt++ {
		c, err := p.Retrieve(ctx)
		if err == nil {
			return c, exitOK
		}
		if !credprovider.IsRetryable(err) {
			fmt.Fprintf(stderr, "tether credential-process: %v\n", err)
			return creds, exitRuntime
		}
		delay, _ := backoff.BackoffDelay(attempt, err)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			fmt.Fprintf(stderr, "tether credential-process: gave up after %d attempts in %s: %v\n", attempt, timeout, err)
			return creds, exitRuntime
		case <-t.C:
		}
	}
}
