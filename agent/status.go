package agent

import (
	"errors"
	"sort"
	"time"

	"github.com/tetherd/tether/credprovider"
	"github.com/tetherd/tether/mqtt"
	"github.com/tetherd/tether/store"
)

// Status is what GET /v1/status answers and `tether status` shows. It holds
// no secret: credentials appear only as their expiry.
type Status struct {
	Version  string         `json:"version"`
	Started  time.Time      `json:"started"`
	Identity IdentityStatus `json:"identity"`
	Roles    []RoleStatus   `json:"roles"`
	Store    store.Health   `json:"store"`
	// MQTT is the MQTT session's status, when [mqtt] is configured.
	MQTT *mqtt.Status `json:"mqtt,omitempty"`
	// Memory is what the Go runtime holds.
	Memory MemoryStatus `json:"memory"`
	// Rotation is the certificate rotation's state (rotate.go).
	Rotation *RotationStatus `json:"rotation,omitempty"`
	// ServerClock is the credentials endpoint's clock as its last answer
	// dated it, for `tether doctor` to compare without logging in again.
	ServerClock *credprovider.ServerClock `json:"server_clock,omitempty"`
}

// IdentityStatus describes the device identity.
type IdentityStatus struct {
	ThingName string    `json:"thing_name"`
	Subject   string    `json:"subject"`
	Issuer    string    `json:"issuer"`
	Key       string    `json:"key"`
	NotAfter  time.Time `json:"not_after"`
	// CertificateID is AWS IoT's id of the certificate (its SHA-256).
	CertificateID string `json:"certificate_id"`
}

// RoleStatus is one role's credential state.
type RoleStatus struct {
	Name        string     `json:"name"`
	Mode        string     `json:"mode"`
	Valid       bool       `json:"valid"`
	Expires     *time.Time `json:"expires,omitempty"`
	LastRefresh *time.Time `json:"last_refresh,omitempty"`
	NextRefresh *time.Time `json:"next_refresh,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
	// Fix says what to do about LastError, when tether knows (an expired
	// SSO sign-in: the command to run).
	Fix        string `json:"fix,omitempty"`
	Refreshes  int    `json:"refreshes"`
	Failures   int    `json:"failures"`
	ClockError string `json:"clock_error,omitempty"`
}

// Status reports the agent's state.
func (a *Agent) Status() Status {
	st := Status{Version: a.opts.Version, Started: a.started.UTC()}
	if leaf := a.id.Leaf(); leaf != nil {
		st.Identity = IdentityStatus{
			ThingName:     a.cfg.Identity.ThingName,
			Subject:       leaf.Subject.String(),
			Issuer:        leaf.Issuer.String(),
			Key:           a.id.KeyLocation(),
			NotAfter:      leaf.NotAfter.UTC(),
			CertificateID: certificateID(leaf),
		}
	}
	names := make([]string, 0, len(a.roles))
	for n := range a.roles {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		// The device role first, the others by name.
		if (names[i] == DeviceRole) != (names[j] == DeviceRole) {
			return names[i] == DeviceRole
		}
		return names[i] < names[j]
	})
	for _, n := range names {
		rs := a.roles[n].ref.Status()
		r := RoleStatus{Name: n, Mode: rs.Mode.String(), Valid: rs.Valid, Refreshes: rs.Refreshes, Failures: rs.Failures,
			Expires: timePtr(rs.Expires), LastRefresh: timePtr(rs.LastRefresh), NextRefresh: timePtr(rs.NextRefresh)}
		if rs.LastError != nil {
			r.LastError = rs.LastError.Error()
			var sso *credprovider.SSOLoginError
			if errors.As(rs.LastError, &sso) {
				r.LastError, r.Fix = sso.Error(), sso.Fix()
			}
		}
		if rs.ClockError != nil {
			r.ClockError = rs.ClockError.Error()
		}
		st.Roles = append(st.Roles, r)
	}
	if a.iot != nil {
		if c, ok := a.iot.ServerClock(); ok {
			st.ServerClock = &c
		}
	}
	st.Store = a.db.Health()
	st.Rotation = a.rot.status()
	if s := a.session(); s != nil {
		ms := s.Status()
		st.MQTT = &ms
	}
	st.Memory = memoryStatus()
	return st
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}
