package credprovider

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// Func adapts a Go function to an aws.CredentialsProvider, so that any source
// of credentials (a vault client, a custom broker) is refreshed by a Refresher
// like the built-in ones. The function should return credentials with
// CanExpire and Expires set; credentials that do not expire are served until
// the process ends.
type Func func(ctx context.Context) (aws.Credentials, error)

// Retrieve calls f and checks that it returned a key pair.
func (f Func) Retrieve(ctx context.Context) (aws.Credentials, error) {
	c, err := f(ctx)
	if err != nil {
		return aws.Credentials{}, err
	}
	if c.AccessKeyID == "" || c.SecretAccessKey == "" {
		return aws.Credentials{}, fmt.Errorf("credprovider: custom credentials function returned no access key ID or secret access key")
	}
	if c.Source == "" {
		c.Source = "CustomFunc"
	}
	return c, nil
}

// CommandSource is the Source of credentials returned by Command.
const CommandSource = "CredentialCommand"

// DefaultCommandTimeout bounds one run of a credentials or MFA command when
// no timeout is given.
const DefaultCommandTimeout = time.Minute

// CommandError is the failure of an external command (a credential_process
// or MFA command). It never holds the command's standard output, which may
// carry secrets; Stderr is its standard error, trimmed to one line.
type CommandError struct {
	// Field is the configuration field that named the command, e.g.
	// "credential_command" or "mfa_command".
	Field string
	// Path is the program run (argv[0]); the arguments are not reported.
	Path string
	// Problem says what went wrong.
	Problem string
	// Stderr is the last line of the command's standard error, if any.
	Stderr string
	// TimedOut is set when the command was killed at its timeout.
	TimedOut bool
	Err      error
}

func (e *CommandError) Error() string {
	msg := fmt.Sprintf("%s %s: %s", e.Field, e.Path, e.Problem)
	if e.Stderr != "" {
		msg += ": stderr: " + e.Stderr
	}
	return msg
}

func (e *CommandError) Unwrap() error { return e.Err }

// Retryable reports timeouts and failed runs as transient (a token service
// may be down); a program that cannot be started or prints garbage is not.
func (e *CommandError) Retryable() bool {
	var ee *exec.ExitError
	return e.TimedOut || errors.As(e.Err, &ee)
}

// maxCommandOutput bounds what is kept of a command's standard output.
const maxCommandOutput = 64 << 10

// checkArgv validates a command line given as argv; field is its Go name.
func checkArgv(field string, argv []string) error {
	if len(argv) == 0 || argv[0] == "" {
		return &OptionError{Field: field, Issue: "is empty: give the program and its arguments as a list"}
	}
	if !filepath.IsAbs(argv[0]) {
		return &OptionError{Field: field, Issue: fmt.Sprintf("%q must be an absolute path (the program runs without a shell or PATH lookup)", argv[0])}
	}
	return nil
}

// runCommand runs argv without a shell, with no standard input, in its own
// process group (killed whole at the timeout), and returns its standard
// output.
func runCommand(ctx context.Context, field string, argv []string, timeout time.Duration) ([]byte, error) {
	if timeout <= 0 {
		timeout = DefaultCommandTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var stdout, stderr limitedBuffer
	stdout.max, stderr.max = maxCommandOutput, 4<<10
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// A script's children would otherwise outlive it and hold its
		// output open.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	if err == nil {
		return stdout.Bytes(), nil
	}
	ce := &CommandError{Field: field, Path: argv[0], Stderr: lastLine(stderr.String()), Err: err}
	var ee *exec.ExitError
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		ce.TimedOut = true
		ce.Problem = fmt.Sprintf("no answer within %v; killed", timeout)
		ce.Err = fmt.Errorf("%w: %w", err, context.DeadlineExceeded)
	case ctx.Err() != nil:
		ce.Problem = "cancelled"
		ce.Err = fmt.Errorf("%w: %w", err, ctx.Err())
	case errors.As(err, &ee):
		ce.Problem = ee.ProcessState.String()
	default:
		ce.Problem = fmt.Sprintf("cannot run: %v", unwrapExec(err))
	}
	return nil, ce
}

func unwrapExec(err error) error {
	var pe interface{ Unwrap() error }
	if errors.As(err, &pe) {
		if inner := pe.Unwrap(); inner != nil {
			return inner
		}
	}
	return err
}

// lastLine returns the last non-empty line of s, without control characters,
// at most 300 characters.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	line := strings.TrimSpace(lines[len(lines)-1])
	return printablePrefix([]byte(line), 300)
}

// limitedBuffer keeps the first max bytes written and discards the rest, so a
// runaway command cannot exhaust memory.
type limitedBuffer struct {
	bytes.Buffer
	max int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// CommandOptions configures a Command.
type CommandOptions struct {
	// Argv is the program (an absolute path) and its arguments. It runs
	// without a shell: no quoting, globbing or PATH lookup.
	Argv []string
	// Timeout bounds one run; default DefaultCommandTimeout.
	Timeout time.Duration
}

// Command is an aws.CredentialsProvider that runs a program printing the
// credential_process document
// {"Version":1,"AccessKeyId":...,"SecretAccessKey":...,"SessionToken":...,"Expiration":RFC 3339}
// on its standard output (see
// https://docs.aws.amazon.com/sdkref/latest/guide/feature-process-credentials.html).
//
// It does not use aws-sdk-go-v2's processcreds: that runs a shell command line
// and quotes the whole output in its parse errors, secrets included.
type Command struct {
	argv    []string
	timeout time.Duration
}

var _ aws.CredentialsProvider = (*Command)(nil)

// NewCommand validates opts (see CommandOptions.Validate). Errors are
// *OptionError, which match ErrInvalidConfig.
func NewCommand(opts CommandOptions) (*Command, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	return &Command{argv: append([]string(nil), opts.Argv...), timeout: opts.Timeout}, nil
}

// processDocument is the credential_process output.
type processDocument struct {
	Version         int
	AccessKeyID     string `json:"AccessKeyId"`
	SecretAccessKey string
	SessionToken    string
	Expiration      *time.Time
	AccountID       string `json:"AccountId"`
}

// Retrieve runs the command and parses its output. Errors are a
// *CommandError; none quotes the output.
func (c *Command) Retrieve(ctx context.Context) (aws.Credentials, error) {
	out, err := runCommand(ctx, "credential_command", c.argv, c.timeout)
	if err != nil {
		return aws.Credentials{}, err
	}
	bad := func(problem string) error {
		return &CommandError{Field: "credential_command", Path: c.argv[0], Problem: problem, Err: ErrMalformedResponse}
	}
	if len(out) >= maxCommandOutput {
		return aws.Credentials{}, bad(fmt.Sprintf("printed more than %d bytes", maxCommandOutput))
	}
	var d processDocument
	if err := json.Unmarshal(out, &d); err != nil {
		return aws.Credentials{}, bad(`did not print a credential_process JSON document ({"Version":1,"AccessKeyId":...})`)
	}
	switch {
	case d.Version != 1:
		return aws.Credentials{}, bad(fmt.Sprintf("printed Version %d; only 1 is defined", d.Version))
	case d.AccessKeyID == "" || d.SecretAccessKey == "":
		return aws.Credentials{}, bad("printed no AccessKeyId or SecretAccessKey")
	}
	cr := aws.Credentials{
		AccessKeyID: d.AccessKeyID, SecretAccessKey: d.SecretAccessKey, SessionToken: d.SessionToken,
		AccountID: d.AccountID, Source: CommandSource,
	}
	if d.Expiration != nil {
		cr.CanExpire, cr.Expires = true, *d.Expiration
	}
	return cr, nil
}

// String describes the provider without its arguments.
func (c *Command) String() string { return "credential_command " + c.argv[0] }
