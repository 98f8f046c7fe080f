package credprovider

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"
)

var (
	// ErrInvalidConfig is wrapped by every error caused by bad options or
	// files handed to this package; retrying will not help.
	ErrInvalidConfig = errors.New("credprovider: invalid configuration")

	// ErrMalformedResponse is wrapped when the credentials endpoint answered
	// 200 with a body that is not the documented credentials document. It
	// is treated as transient (a proxy or a half-deployed endpoint).
	ErrMalformedResponse = errors.New("malformed response from the credentials endpoint")

	// ErrNoCredentials is wrapped by Refresher.Retrieve when it has no
	// credentials it may serve and could not get new ones.
	ErrNoCredentials = errors.New("credprovider: no valid credentials")

	// ErrClockUnsynchronised is matched (errors.Is) by a *ClockError.
	ErrClockUnsynchronised = errors.New("system clock is not synchronised")
)

// ServiceError is a non-200 answer of the credentials endpoint.
type ServiceError struct {
	Endpoint   string // host[:port] that answered
	RoleAlias  string
	StatusCode int
	// Message is the service's own explanation ({"message": "..."}), or the
	// start of the body when it sent something else.
	Message string
	// RetryAfter is the server's Retry-After hint, 0 when absent.
	RetryAfter time.Duration
}

func (e *ServiceError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.StatusCode)
	}
	return fmt.Sprintf("credentials endpoint %s, role alias %q: HTTP %d: %s%s",
		e.Endpoint, e.RoleAlias, e.StatusCode, msg, serviceHint(e.StatusCode))
}

// serviceHint says what an operator should check for the permanent answers.
func serviceHint(code int) string {
	switch code {
	case http.StatusBadRequest:
		return " (check thing_name and duration)"
	case http.StatusUnauthorized, http.StatusForbidden:
		return " (check that the device certificate is registered and active, attached to the thing, and that its policy allows iot:AssumeRoleWithCertificate on the role alias)"
	case http.StatusNotFound:
		return " (check role_alias and that credential_endpoint is this account's and region's)"
	}
	return ""
}

// Retryable reports whether asking again later may succeed: throttling and
// server-side failures are, everything the client got wrong is not.
func (e *ServiceError) Retryable() bool {
	return e.StatusCode == http.StatusTooManyRequests || e.StatusCode >= 500
}

// TLSProblem says which side of the TLS handshake failed verification.
type TLSProblem int

const (
	// TLSUntrustedServer: the endpoint's certificate does not chain to the
	// trusted roots.
	TLSUntrustedServer TLSProblem = iota + 1
	// TLSServerNameMismatch: the endpoint's certificate is not valid for the
	// configured host name.
	TLSServerNameMismatch
	// TLSServerCertInvalid: the endpoint's certificate is expired, not yet
	// valid, or unfit for server authentication.
	TLSServerCertInvalid
	// TLSClientCertRejected: the endpoint refused the device certificate
	// during the handshake.
	TLSClientCertRejected
)

// TLSError is a failed certificate verification while connecting to the
// credentials endpoint. It is permanent: the same configuration will fail the
// same way until someone changes the certificate, the CA file or the endpoint.
type TLSError struct {
	Endpoint string
	Problem  TLSProblem
	// CA describes the trusted roots in use, e.g. "ca_file=/etc/tether/ca.pem"
	// or "ca_file=embedded Amazon Root CA 1 and 3".
	CA  string
	Err error
}

func (e *TLSError) Error() string {
	switch e.Problem {
	case TLSUntrustedServer:
		return fmt.Sprintf("credentials endpoint %s: the credentials endpoint's certificate is not signed by a trusted CA (%s): check credential_endpoint and ca_file: %v", e.Endpoint, e.CA, e.Err)
	case TLSServerNameMismatch:
		return fmt.Sprintf("credentials endpoint %s: the credentials endpoint's certificate is not valid for this host name: check credential_endpoint: %v", e.Endpoint, e.Err)
	case TLSServerCertInvalid:
		return fmt.Sprintf("credentials endpoint %s: the credentials endpoint's certificate is invalid (expired, not yet valid, or not for servers; a wrong system clock causes this too): %v", e.Endpoint, e.Err)
	case TLSClientCertRejected:
		return fmt.Sprintf("credentials endpoint %s rejected the device certificate in the TLS handshake: check that the certificate (or its CA) is registered with AWS IoT and active: %v", e.Endpoint, e.Err)
	}
	return fmt.Sprintf("credentials endpoint %s: TLS handshake failed: %v", e.Endpoint, e.Err)
}

func (e *TLSError) Unwrap() error { return e.Err }

// Retryable is always false: a verification failure does not heal by itself.
func (e *TLSError) Retryable() bool { return false }

// ConnError is a failure to reach the credentials endpoint or to read its
// answer: DNS, refused or dropped connections, timeouts. It is transient.
type ConnError struct {
	Endpoint string
	Err      error
}

func (e *ConnError) Error() string {
	return fmt.Sprintf("credentials endpoint %s: %v", e.Endpoint, e.Err)
}

func (e *ConnError) Unwrap() error { return e.Err }

// Retryable is always true.
func (e *ConnError) Retryable() bool { return true }

// ClockError reports a system clock that reads earlier than this release was
// built, which only happens before NTP (or an RTC) has set it.
type ClockError struct {
	Now       time.Time
	NotBefore time.Time
}

func (e *ClockError) Error() string {
	return fmt.Sprintf("system clock reads %s, before %s (no release of tether is older): it is not synchronised; credential lifetimes are measured by elapsed time until it is (check NTP / systemd-timesyncd)",
		e.Now.UTC().Format(time.RFC3339), e.NotBefore.UTC().Format(time.RFC3339))
}

// Is makes errors.Is(err, ErrClockUnsynchronised) true.
func (e *ClockError) Is(target error) bool { return target == ErrClockUnsynchronised }

// IsRetryable reports whether err, from any provider in this package or the
// Refresher, is transient: asking again later may succeed without anyone
// changing the configuration. Unknown errors are reported as not retryable.
func IsRetryable(err error) bool {
	if err == nil {
		return false
	}
	var r interface{ Retryable() bool }
	if errors.As(err, &r) {
		return r.Retryable()
	}
	return errors.Is(err, ErrMalformedResponse) || errors.Is(err, context.DeadlineExceeded)
}
