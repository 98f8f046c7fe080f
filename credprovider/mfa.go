package credprovider

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/tetherd/tether/platform/secretfile"
)

// TokenProvider returns a current MFA token code. AssumeRole calls it on
// every refresh, since a code is good for one use within about 30 s.
type TokenProvider func(ctx context.Context) (string, error)

// ErrNoMFACode is wrapped when an MFA token source produced no code.
var ErrNoMFACode = errors.New("credprovider: no MFA code")

// MFACommand returns a TokenProvider that runs argv (no shell; argv[0] an
// absolute path) with the timeout (0: DefaultCommandTimeout) and takes the
// last standalone 6-digit number it prints on standard output as the code.
// A command that fails, hangs or prints no code yields a *CommandError that
// carries its standard error, never its output.
func MFACommand(argv []string, timeout time.Duration) (TokenProvider, error) {
	if err := checkArgv("MFACommand.argv", argv); err != nil {
		return nil, err
	}
	argv = append([]string(nil), argv...)
	return func(ctx context.Context) (string, error) {
		out, err := runCommand(ctx, "mfa_command", argv, timeout)
		if err != nil {
			return "", err
		}
		code := lastCode(string(out))
		if code == "" {
			return "", &CommandError{Field: "mfa_command", Path: argv[0],
				Problem: "printed no 6-digit code on standard output", Err: ErrNoMFACode}
		}
		return code, nil
	}, nil
}

// lastCode returns the last run of exactly six digits in s, or "".
func lastCode(s string) string {
	runs := strings.FieldsFunc(s, func(r rune) bool { return r < '0' || r > '9' })
	for i := len(runs) - 1; i >= 0; i-- {
		if len(runs[i]) == 6 {
			return runs[i]
		}
	}
	return ""
}

// TOTPFile returns a TokenProvider that computes RFC 6238 codes from the
// secret in path, for unattended gateways: the file holds a base32 secret (as
// shown when the virtual MFA device was created) or an otpauth:// URI. The
// file is read at each call and refused if group or others can access it.
// now is the clock (nil: time.Now).
func TOTPFile(path string, now func() time.Time) (TokenProvider, error) {
	if path == "" {
		return nil, &OptionError{Field: "TOTPFile.path", Issue: "is empty: give the file holding the TOTP secret"}
	}
	if now == nil {
		now = time.Now
	}
	if _, err := readTOTP(path); err != nil {
		return nil, err
	}
	return func(context.Context) (string, error) {
		k, err := readTOTP(path)
		if err != nil {
			return "", err
		}
		return k.code(now()), nil
	}, nil
}

func readTOTP(path string) (totpKey, error) {
	if err := secretfile.Check(path); err != nil {
		return totpKey{}, &OptionError{Field: "TOTPFile.path", Issue: err.Error()}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return totpKey{}, &OptionError{Field: "TOTPFile.path", Issue: fmt.Sprintf("%s: %v", path, unwrapPath(err))}
	}
	k, err := parseTOTPKey(strings.TrimSpace(string(b)))
	switch {
	case errors.Is(err, errEmptySecret):
		return k, &OptionError{Field: "TOTPFile.path", Issue: path + " " + err.Error()}
	case err != nil:
		return k, &OptionError{Field: "TOTPFile.path", Issue: path + ": " + err.Error()}
	}
	return k, nil
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
