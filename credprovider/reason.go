package credprovider

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/smithy-go"
)

// FailureReason is why a credentials fetch failed, in a small fixed set an
// operator can alert on (a metric label, docs/metrics.md). ClassifyFailure
// assigns it.
type FailureReason int

// The reasons, in the order FailureReasons lists them.
const (
	// ReasonThrottled: the service's rate limit answered (HTTP 429, STS
	// Throttling); the fleet is asking at once.
	ReasonThrottled FailureReason = iota
	// ReasonRefused: the service refused the request for good (HTTP 4xx:
	// certificate not registered or inactive, policy, unknown role alias,
	// access denied on a role).
	ReasonRefused
	// ReasonExpired: what was handed out or used is expired: credentials
	// stale on arrival, an expired STS token of the source credentials, an
	// expired SSO token.
	ReasonExpired
	// ReasonTLS: the TLS handshake failed verification (the endpoint's
	// certificate, or the endpoint rejected the device certificate).
	ReasonTLS
	// ReasonNetwork: DNS, connecting, reading the answer, or a timeout.
	ReasonNetwork
	// ReasonServer: the service failed (HTTP 5xx).
	ReasonServer
	// ReasonMalformed: the service answered 200 with something that is not
	// credentials.
	ReasonMalformed
	// ReasonClock: this machine's clock is not synchronised.
	ReasonClock
	// ReasonOther: anything else (a helper command, a configuration
	// problem found at fetch time).
	ReasonOther

	// NumFailureReasons is the number of reasons.
	NumFailureReasons = int(ReasonOther) + 1
)

var reasonNames = [NumFailureReasons]string{
	"throttled", "refused", "expired", "tls", "network", "server", "malformed", "clock", "other",
}

// String returns the reason's label value, e.g. "throttled".
func (r FailureReason) String() string {
	if r < 0 || int(r) >= NumFailureReasons {
		return "other"
	}
	return reasonNames[r]
}

// FailureReasons lists every reason, for code that writes one series each.
func FailureReasons() [NumFailureReasons]FailureReason {
	var rs [NumFailureReasons]FailureReason
	for i := range rs {
		rs[i] = FailureReason(i)
	}
	return rs
}

// FailureCounts counts failed fetches by FailureReason.
type FailureCounts [NumFailureReasons]int

// staleError is the failure of credentials that arrive expired, or too
// close to their expiry to be served.
type staleError struct{ msg string }

func (e *staleError) Error() string { return e.msg }

// ClassifyFailure says why err, a failure of any provider in this package
// or of an SDK credentials provider, happened.
func ClassifyFailure(err error) FailureReason {
	var (
		se    *ServiceError
		stale *staleError
		tlsE  *TLSError
		ce    *ConnError
		api   smithy.APIError
		netE  net.Error
		resp  interface{ HTTPStatusCode() int }
	)
	switch {
	case errors.Is(err, ErrClockUnsynchronised):
		return ReasonClock
	case errors.As(err, &stale):
		return ReasonExpired
	case errors.As(err, &se):
		return byStatus(se.StatusCode)
	case errors.As(err, &tlsE):
		return ReasonTLS
	case errors.As(err, &api):
		code := api.ErrorCode()
		if _, ok := retry.DefaultThrottleErrorCodes[code]; ok {
			return ReasonThrottled
		}
		if strings.Contains(code, "Expired") {
			return ReasonExpired
		}
		if errors.As(err, &resp) && resp.HTTPStatusCode() != 0 {
			return byStatus(resp.HTTPStatusCode())
		}
		if api.ErrorFault() == smithy.FaultServer {
			return ReasonServer
		}
		return ReasonRefused
	case errors.Is(err, ErrMalformedResponse):
		return ReasonMalformed
	case errors.As(err, &ce), errors.As(err, &netE), errors.Is(err, context.DeadlineExceeded):
		return ReasonNetwork
	case err != nil && strings.Contains(err.Error(), "SSO token is expired"):
		// The SDK's SSO provider says so only in words ("cached SSO token
		// is expired, or not present, and cannot be refreshed").
		return ReasonExpired
	}
	return ReasonOther
}

func byStatus(code int) FailureReason {
	switch {
	case code == http.StatusTooManyRequests:
		return ReasonThrottled
	case code >= 500:
		return ReasonServer
	}
	return ReasonRefused
}
