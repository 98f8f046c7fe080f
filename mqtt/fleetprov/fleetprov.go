// Package fleetprov is a client for the AWS IoT Core MQTT APIs that give a
// device its own certificate: CreateCertificateFromCsr
// ($aws/certificates/create-from-csr/json) and RegisterThing
// ($aws/provisioning-templates/{template}/provision/json), the two calls of
// fleet provisioning by claim, which tether also uses to rotate a device's
// certificate.
//
// Requests travel over a Conn: Dial opens a short-lived connection of its
// own (the claim certificate's, or a pending identity proving itself), and
// SessionConn uses the device's long-lived *mqtt.Session. The private key
// never leaves the device: only a CSR is sent.
//
// See docs/identity.md for the flows and the cloud-side setup.
package fleetprov

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Topics of the AWS IoT Core certificate and provisioning MQTT APIs. Replies
// arrive on the request topic plus "/accepted" or "/rejected".
const (
	CreateFromCSRTopic = "$aws/certificates/create-from-csr/json"
	provisionPrefix    = "$aws/provisioning-templates/"
	provisionSuffix    = "/provision/json"
)

// ProvisionTopic is the RegisterThing request topic of template.
func ProvisionTopic(template string) string {
	return provisionPrefix + template + provisionSuffix
}

// TemplateOf returns the template name of a RegisterThing request topic.
func TemplateOf(topic string) (string, bool) {
	t, ok := strings.CutPrefix(topic, provisionPrefix)
	if !ok {
		return "", false
	}
	t, ok = strings.CutSuffix(t, provisionSuffix)
	return t, ok && t != "" && !strings.Contains(t, "/")
}

// CreateCertificateRequest is the CreateCertificateFromCsr request payload.
type CreateCertificateRequest struct {
	CertificateSigningRequest string `json:"certificateSigningRequest"`
}

// Certificate is the CreateCertificateFromCsr accepted reply: a certificate
// in PENDING_ACTIVATION, which only RegisterThing with its ownership token
// activates (AWS deletes it after an hour otherwise).
type Certificate struct {
	CertificateID             string `json:"certificateId"`
	CertificatePEM            string `json:"certificatePem"`
	CertificateOwnershipToken string `json:"certificateOwnershipToken"`
}

// RegisterThingRequest is the RegisterThing request payload.
type RegisterThingRequest struct {
	CertificateOwnershipToken string            `json:"certificateOwnershipToken"`
	Parameters                map[string]string `json:"parameters,omitempty"`
}

// Registration is the RegisterThing accepted reply.
type Registration struct {
	ThingName           string            `json:"thingName"`
	DeviceConfiguration map[string]string `json:"deviceConfiguration,omitempty"`
}

// Error is a "/rejected" reply, in the shape AWS IoT Core sends.
type Error struct {
	// Op is the call that was rejected: "CreateCertificateFromCsr" or
	// "RegisterThing".
	Op           string `json:"-"`
	StatusCode   int    `json:"statusCode"`
	ErrorCode    string `json:"errorCode"`
	ErrorMessage string `json:"errorMessage"`
}

// Error is one line naming the call, the status and AWS's reason.
func (e *Error) Error() string {
	msg := fmt.Sprintf("%s rejected: %d %s", e.Op, e.StatusCode, e.ErrorCode)
	if e.ErrorMessage != "" {
		msg += ": " + strings.ReplaceAll(e.ErrorMessage, "\n", " ")
	}
	if e.Throttled() {
		msg += " (throttled: retry later)"
	}
	return msg
}

// Throttled reports whether AWS asked the device to slow down.
func (e *Error) Throttled() bool {
	return e.StatusCode == 429 || e.ErrorCode == "ThrottlingException" || e.ErrorCode == "Throttling"
}

// Temporary reports whether the same request may succeed later: throttling
// and service errors; a refused template or bad parameters will not.
func (e *Error) Temporary() bool { return e.Throttled() || e.StatusCode >= 500 }

// ErrNoReply is returned when neither an accepted nor a rejected reply came
// before the deadline (the broker dropped the request, the policy forbids the
// topic, or the service is slow).
var ErrNoReply = errors.New("no reply")

// DefaultTimeout bounds one request when Client.Timeout is zero.
const DefaultTimeout = 30 * time.Second

// Message is a publication a Conn received.
type Message struct {
	Topic   string
	Payload []byte
}

// Conn is how a Client reaches the broker.
type Conn interface {
	// Subscribe delivers the payloads of messages matching filter until
	// the returned function is called. It returns once the broker granted
	// the subscription.
	Subscribe(ctx context.Context, filter string) (<-chan Message, func(), error)
	// Publish sends payload to topic at QoS 1 now, without queuing it for
	// a later connection: a request is only useful while its caller waits.
	Publish(ctx context.Context, topic string, payload []byte) error
}

// Client calls the certificate and provisioning APIs over a Conn. Calls are
// not concurrent: AWS sends a reply to every subscriber of its topic and a
// reply carries nothing to match it with its request.
type Client struct {
	Conn Conn
	// Timeout bounds one request; zero means DefaultTimeout.
	Timeout time.Duration
}

// CreateCertificateFromCSR asks AWS IoT to sign csrPEM. The certificate it
// returns is PENDING_ACTIVATION until RegisterThing activates it.
func (c *Client) CreateCertificateFromCSR(ctx context.Context, csrPEM []byte) (*Certificate, error) {
	var out Certificate
	err := c.call(ctx, "CreateCertificateFromCsr", CreateFromCSRTopic, CreateCertificateRequest{CertificateSigningRequest: string(csrPEM)}, &out)
	if err != nil {
		return nil, err
	}
	if out.CertificatePEM == "" || out.CertificateOwnershipToken == "" {
		return nil, errors.New("CreateCertificateFromCsr accepted without a certificate or ownership token")
	}
	return &out, nil
}

// RegisterThing runs template with the certificate's ownership token and
// parameters; it activates the certificate and returns the thing name.
func (c *Client) RegisterThing(ctx context.Context, template, ownershipToken string, params map[string]string) (*Registration, error) {
	if template == "" || strings.ContainsAny(template, "/+#") {
		return nil, fmt.Errorf("RegisterThing: template name %q is empty or contains / + #", template)
	}
	var out Registration
	err := c.call(ctx, "RegisterThing", ProvisionTopic(template), RegisterThingRequest{CertificateOwnershipToken: ownershipToken, Parameters: params}, &out)
	if err != nil {
		return nil, err
	}
	if out.ThingName == "" {
		return nil, fmt.Errorf("RegisterThing with template %q accepted without a thing name; the template must create or name a thing", template)
	}
	return &out, nil
}

func (c *Client) call(ctx context.Context, op, topic string, req, out any) error {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	body, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	acc, stopAcc, err := c.Conn.Subscribe(ctx, topic+"/accepted")
	if err != nil {
		return fmt.Errorf("%s: subscribe to %s/accepted: %w", op, topic, err)
	}
	defer stopAcc()
	rej, stopRej, err := c.Conn.Subscribe(ctx, topic+"/rejected")
	if err != nil {
		return fmt.Errorf("%s: subscribe to %s/rejected: %w", op, topic, err)
	}
	defer stopRej()
	if err := c.Conn.Publish(ctx, topic, body); err != nil {
		return fmt.Errorf("%s: publish to %s: %w", op, topic, err)
	}
	select {
	case p, ok := <-acc:
		if !ok {
			return fmt.Errorf("%s: the connection closed before a reply", op)
		}
		if err := json.Unmarshal(p.Payload, out); err != nil {
			return fmt.Errorf("%s: accepted reply is not valid JSON: %w", op, err)
		}
		return nil
	case p, ok := <-rej:
		if !ok {
			return fmt.Errorf("%s: the connection closed before a reply", op)
		}
		e := &Error{Op: op}
		if err := json.Unmarshal(p.Payload, e); err != nil {
			return fmt.Errorf("%s rejected with an unreadable reply: %w", op, err)
		}
		return e
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return fmt.Errorf("%s: %w within %s on %s/accepted or /rejected; check that the policy allows publishing to %s and subscribing to its replies", op, ErrNoReply, timeout, topic, topic)
		}
		return fmt.Errorf("%s: %w", op, ctx.Err())
	}
}
