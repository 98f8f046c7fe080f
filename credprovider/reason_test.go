package credprovider_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/aws/smithy-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/credprovider"
	"github.com/tetherd/tether/credprovider/clocktest"
	"github.com/tetherd/tether/credprovider/iotcredtest"
)

// TestClassifyFailure ensures that each kind of failure of the providers
// and of the SDK gets its reason, through any wrapping.
func TestClassifyFailure(t *testing.T) {
	role := func(err error) error {
		return &credprovider.RoleError{RoleARN: "arn:aws:iam::1:role/r", Op: "AssumeRole", Err: err}
	}
	for _, tc := range []struct {
		err  error
		want credprovider.FailureReason
	}{
		{&credprovider.ServiceError{StatusCode: 429}, credprovider.ReasonThrottled},
		{&credprovider.ServiceError{StatusCode: 403}, credprovider.ReasonRefused},
		{&credprovider.ServiceError{StatusCode: 404}, credprovider.ReasonRefused},
		{&credprovider.ServiceError{StatusCode: 503}, credprovider.ReasonServer},
		{&credprovider.TLSError{Problem: credprovider.TLSClientCertRejected}, credprovider.ReasonTLS},
		{&credprovider.ConnError{Err: errors.New("connection refused")}, credprovider.ReasonNetwork},
		{fmt.Errorf("%w: unexpected EOF", credprovider.ErrMalformedResponse), credprovider.ReasonMalformed},
		{&credprovider.ClockError{}, credprovider.ReasonClock},
		{role(&smithy.GenericAPIError{Code: "Throttling"}), credprovider.ReasonThrottled},
		{role(&smithy.GenericAPIError{Code: "ExpiredToken"}), credprovider.ReasonExpired},
		{role(&smithy.GenericAPIError{Code: "AccessDenied", Fault: smithy.FaultClient}), credprovider.ReasonRefused},
		{role(&smithy.GenericAPIError{Code: "InternalFailure", Fault: smithy.FaultServer}), credprovider.ReasonServer},
		{role(&net.OpError{Op: "dial", Err: errors.New("no route to host")}), credprovider.ReasonNetwork},
		{role(context.DeadlineExceeded), credprovider.ReasonNetwork},
		{errors.New("refresh cached SSO token failed, cached SSO token is expired, or not present, and cannot be refreshed"), credprovider.ReasonExpired},
		{errors.New("mfa_command exited 1"), credprovider.ReasonOther},
		{fmt.Errorf("%w: wrapped", credprovider.ErrNoCredentials), credprovider.ReasonOther},
	} {
		assert.Equal(t, tc.want, credprovider.ClassifyFailure(tc.err), "%v", tc.err)
		assert.Equal(t, tc.want, credprovider.ClassifyFailure(fmt.Errorf("%w: %w", credprovider.ErrNoCredentials, tc.err)), "wrapped: %v", tc.err)
	}
	names := map[string]bool{}
	for _, r := range credprovider.FailureReasons() {
		names[r.String()] = true
	}
	assert.Len(t, names, credprovider.NumFailureReasons, "every reason has a name of its own")
	assert.Equal(t, "other", credprovider.FailureReason(99).String())
}

// TestFailuresByReasonOverIoT ensures that a Refresher over the IoT
// provider counts the simulator's real failures by reason, and that the
// counts add up to TotalFailures and survive a success.
func TestFailuresByReasonOverIoT(t *testing.T) {
	s, dev := sim(t)
	clk := clocktest.New(time.Now())
	r, err := credprovider.NewRefresher(newIoT(t, iotOpts(s, dev)), credprovider.RefreshOptions{
		Mode: credprovider.Deferred, Clock: clk, Rand: func() float64 { return 0 },
	})
	require.NoError(t, err)
	for _, f := range []iotcredtest.Fault{iotcredtest.FaultThrottled, iotcredtest.FaultThrottled, iotcredtest.FaultInternalError,
		iotcredtest.FaultMalformed} {
		s.Fail(1, f)
		_, err := r.Retrieve(t.Context())
		require.Error(t, err, "%v", f)
		clk.Advance(10 * time.Minute)
	}
	_, err = r.Retrieve(t.Context())
	require.NoError(t, err)

	st := r.Status()
	var want credprovider.FailureCounts
	want[credprovider.ReasonThrottled] = 2
	want[credprovider.ReasonServer] = 1
	want[credprovider.ReasonMalformed] = 1
	assert.Equal(t, want, st.FailuresByReason)
	assert.Equal(t, 4, st.TotalFailures)
	assert.Equal(t, 0, st.Failures)
	assert.Equal(t, 1, st.Refreshes)

	// A closed port, and an alias the service does not know.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closed := ln.Addr().String()
	require.NoError(t, ln.Close())
	for _, tc := range []struct {
		edit func(*credprovider.IoTOptions)
		want credprovider.FailureReason
	}{
		{func(o *credprovider.IoTOptions) { o.Endpoint = closed }, credprovider.ReasonNetwork},
		{func(o *credprovider.IoTOptions) { o.RoleAlias = "nope" }, credprovider.ReasonRefused},
	} {
		o := iotOpts(s, dev)
		tc.edit(&o)
		r, err = credprovider.NewRefresher(newIoT(t, o), credprovider.RefreshOptions{Mode: credprovider.Deferred, Clock: clk})
		require.NoError(t, err)
		_, err = r.Retrieve(t.Context())
		require.Error(t, err)
		assert.Equal(t, 1, r.Status().FailuresByReason[tc.want], "%v", err)
	}
}

// TestFailuresByReasonStale ensures that credentials which arrive already
// expired count as "expired".
func TestFailuresByReasonStale(t *testing.T) {
	clk := clocktest.New(t0)
	p := &scripted{clk: clk, lifetime: -time.Minute}
	r := newRefresher(t, p, clk, credprovider.RefreshOptions{Mode: credprovider.Deferred})
	_, err := r.Retrieve(t.Context())
	require.Error(t, err)
	assert.Equal(t, 1, r.Status().FailuresByReason[credprovider.ReasonExpired])
}
