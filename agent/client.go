package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"
)

// SocketClient returns an HTTP client that reaches the agent's Unix socket at
// path; the URL's host is ignored (use "http://tether/...").
func SocketClient(path string) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", path)
			},
			MaxIdleConnsPerHost: 4,
		},
	}
}

// APIError is an error answer of the agent's API, with its HTTP status.
type APIError struct {
	Status  int
	Code    string
	Message string
}

func (e *APIError) Error() string { return e.Message }

// FetchCredentials asks the agent at socket for a role's credentials (""
// for the caller's default: its [[workload]]'s role, else the device role).
func FetchCredentials(ctx context.Context, socket, role string) (*Credentials, error) {
	path := "/v1/credentials"
	if role != "" {
		path += "/" + url.PathEscape(role)
	}
	var c Credentials
	if err := getJSON(ctx, socket, path, &c); err != nil {
		return nil, err
	}
	if _, err := time.Parse(time.RFC3339, c.Expiration); err != nil || c.AccessKeyID == "" {
		return nil, fmt.Errorf("the agent at %s answered credentials without a key or expiry", socket)
	}
	return &c, nil
}

// FetchStatus asks the agent at socket for its status.
func FetchStatus(ctx context.Context, socket string) (*Status, error) {
	var st Status
	if err := getJSON(ctx, socket, "/v1/status", &st); err != nil {
		return nil, err
	}
	return &st, nil
}

func getJSON(ctx context.Context, socket, path string, v any) error {
	return callJSON(ctx, socket, http.MethodGet, path, v)
}

func callJSON(ctx context.Context, socket, method, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, method, "http://tether"+path, nil)
	if err != nil {
		return err
	}
	client := SocketClient(socket)
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("cannot reach the agent at %s: %w; is `tether run` running (or pass --socket)?", socket, unwrapSyscall(unwrapOp(err)))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("reading the agent's answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		var ae apiError
		if json.Unmarshal(body, &ae) != nil || ae.Message == "" {
			ae.Message = fmt.Sprintf("the agent answered %s", resp.Status)
		}
		return &APIError{Status: resp.StatusCode, Code: ae.Code, Message: ae.Message}
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("the agent at %s answered malformed JSON: %w", socket, err)
	}
	return nil
}

func unwrapOp(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err
	}
	return err
}

// RequestRotation asks the agent at socket to rotate the device
// certificate now; it returns once the agent accepted the request.
func RequestRotation(ctx context.Context, socket string) error {
	var out map[string]string
	return callJSON(ctx, socket, http.MethodPost, "/v1/identity/rotate", &out)
}
