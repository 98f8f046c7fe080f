package agent

import (
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/tetherd/tether/credprovider"
	"github.com/tetherd/tether/platform"
)

// Credentials per workload. A [[workload]] picks local programs by their
// systemd unit, uid or gid and says which [[role]] they get, narrowed by a
// session policy and marked with session tags and a SourceIdentity that name
// the program and the device, so that CloudTrail tells them apart. Each
// workload is a role session of its own (an AssumeRole with Policy, Tags and
// SourceIdentity), refreshed, cached and persisted like any role, under a
// record named ROLE/WORKLOAD that no request can name directly.
//
// A peer is matched by its unit first, then its uid, then its primary gid,
// then its supplementary groups (the first [[workload]] in file order that
// names one of them): the most specific wins. docs/workloads.md has the
// rules and the IAM side.

// WorkloadConfig is one [[workload]]: which local programs (exactly one of
// Unit, UID, GID) get what.
type WorkloadConfig struct {
	// Name names the workload in tags, sessions, logs and status.
	Name string `toml:"name"`
	// Unit is a systemd unit (uploader.service), read from the peer's cgroup.
	Unit string `toml:"unit"`
	// UID and GID are the peer's uid, or one of its groups; pointers because
	// 0 (root) is a uid like any other.
	UID *int `toml:"uid"`
	GID *int `toml:"gid"`
	// Role is the [[role]] the workload gets, at /v1/credentials and by its name.
	Role string `toml:"role"`
	// SessionName is the RoleSessionName; default NAME@THING.
	SessionName string `toml:"session_name"`
	// Policy (inline JSON) or PolicyFile (a file holding it) narrows the
	// session; PolicyARNs are managed session policies.
	Policy     string   `toml:"policy"`
	PolicyFile string   `toml:"policy_file"`
	PolicyARNs []string `toml:"policy_arns"`
	// Tags are session tags added to the role's and to tether's own.
	Tags map[string]string `toml:"tags"`
	// SourceIdentity defaults to UNIT@THING, or NAME@THING for a uid or gid.
	SourceIdentity string `toml:"source_identity"`

	// policy is the session policy, packed, from Policy or PolicyFile (set
	// by validation).
	policy string
}

// Session tags tether attaches to every workload's session.
const (
	TagThing    = "tether:thing"
	TagWorkload = "tether:workload"
	TagUnit     = "tether:unit"
	TagUID      = "tether:uid"
	TagGID      = "tether:gid"
)

// tagPrefix is tether's own tag namespace, which [[workload]] tags may not use.
const tagPrefix = "tether:"

// selector says which programs w picks, as the configuration spells it.
func (w *WorkloadConfig) selector() string {
	switch {
	case w.Unit != "":
		return "unit " + w.Unit
	case w.UID != nil:
		return "uid " + strconv.Itoa(*w.UID)
	case w.GID != nil:
		return "gid " + strconv.Itoa(*w.GID)
	}
	return "nothing"
}

// scopedRole is the role session w gets: its [[role]] base with w's session
// name, policy, tags and source identity, named ROLE/WORKLOAD.
func (w *WorkloadConfig) scopedRole(base RoleConfig, thing string) RoleConfig {
	r := base
	r.Name, r.workload = base.Name+"/"+w.Name, w.Name
	r.SessionName = w.SessionName
	if r.SessionName == "" {
		r.SessionName = identityAt(w.Name, thing)
	}
	if w.policy != "" {
		r.Policy = w.policy
	}
	if len(w.PolicyARNs) > 0 {
		r.PolicyARNs = w.PolicyARNs
	}
	r.Tags = map[string]string{}
	for k, v := range base.Tags {
		r.Tags[k] = v
	}
	for k, v := range w.Tags {
		r.Tags[k] = v
	}
	r.Tags[TagThing] = credprovider.TagValueOf(thing)
	r.Tags[TagWorkload] = w.Name
	r.SourceIdentity = w.SourceIdentity
	switch {
	case w.Unit != "":
		r.Tags[TagUnit] = credprovider.TagValueOf(w.Unit)
		if r.SourceIdentity == "" {
			r.SourceIdentity = identityAt(w.Unit, thing)
		}
	case w.UID != nil:
		r.Tags[TagUID] = strconv.Itoa(*w.UID)
	case w.GID != nil:
		r.Tags[TagGID] = strconv.Itoa(*w.GID)
	}
	if r.SourceIdentity == "" {
		r.SourceIdentity = identityAt(w.Name, thing)
	}
	return r
}

// identityAt is "what@thing" as a SourceIdentity or session name (64
// characters at most), shortening what rather than the thing.
func identityAt(what, thing string) string {
	if n := 63 - len(thing); len(what) > n {
		what = what[:max(1, n)]
	}
	return credprovider.SourceIdentityOf(what + "@" + thing)
}

// scopedRoles are the role sessions of every [[workload]] of a valid c.
func (c *Config) scopedRoles() []RoleConfig {
	var out []RoleConfig
	for i := range c.Workloads {
		w := &c.Workloads[i]
		if j := slices.IndexFunc(c.Roles, func(r RoleConfig) bool { return r.Name == w.Role }); j >= 0 {
			out = append(out, w.scopedRole(c.Roles[j], c.Identity.ThingName))
		}
	}
	return out
}

// workloadKeys names a [[workload]]'s keys for the options credprovider
// checks; options set by the role are the role's to report.
var workloadKeys = map[string]string{
	"AssumeRoleOptions.SessionName":    "session_name",
	"AssumeRoleOptions.Policy":         "policy",
	"AssumeRoleOptions.PolicyARNs":     "policy_arns",
	"AssumeRoleOptions.Tags":           "tags",
	"AssumeRoleOptions.SourceIdentity": "source_identity",
}

func (c *Config) validateWorkloads(v *validator) {
	names := map[string]int{}
	selectors := map[string]int{}
	for i := range c.Workloads {
		w := &c.Workloads[i]
		key := fmt.Sprintf("workload.%d", i)
		v.name(key, "workload", w.Name, "it names the program in CloudTrail", i, names)

		n := 0
		for _, set := range []bool{w.Unit != "", w.UID != nil, w.GID != nil} {
			if set {
				n++
			}
		}
		switch {
		case n != 1:
			v.fail(key, "set exactly one of unit, uid and gid: the programs this workload picks")
		case w.Unit != "" && !platform.ValidUnitName(w.Unit):
			v.fail(key+".unit", "%q is not a systemd unit name like uploader.service (a template like foo@.service names no running program)", w.Unit)
		case w.UID != nil:
			v.ids(key+".uid", []int{*w.UID})
		case w.GID != nil:
			v.ids(key+".gid", []int{*w.GID})
		}
		if n == 1 {
			sel := w.selector()
			if j, dup := selectors[sel]; dup {
				v.fail(key, "%s is already picked by workload[%d]; a program gets one workload", sel, j)
			}
			selectors[sel] = i
		}

		j := slices.IndexFunc(c.Roles, func(r RoleConfig) bool { return r.Name == w.Role })
		switch {
		case w.Role == "":
			v.fail(key+".role", "missing; name the [[role]] these programs get")
		case w.Role == DeviceRole:
			v.fail(key+".role", "the device role comes from the IoT role alias and cannot carry a session policy or tags; add a [[role]] (its role_arn may be the alias's own role) and name it here")
		case j < 0:
			v.fail(key+".role", "role %q is not defined; name a [[role]]", w.Role)
		case len(c.Roles[j].CredentialCommand) > 0 || c.Roles[j].WebIdentityTokenFile != "":
			v.fail(key+".role", "role %q does not use STS AssumeRole (credential_command or web_identity_token_file), so it cannot carry a workload's policy, tags and source identity; name a role with role_arn", w.Role)
		}

		policyKey := key + ".policy"
		switch {
		case w.Policy != "" && w.PolicyFile != "":
			v.fail(key+".policy_file", "and policy are both set; keep one")
		case w.PolicyFile != "":
			policyKey = key + ".policy_file"
			w.policy = v.policyFile(policyKey, w.PolicyFile)
		default:
			w.policy = w.Policy
		}
		for k := range w.Tags {
			if strings.HasPrefix(strings.ToLower(k), tagPrefix) {
				v.fail(key+".tags", "tag %q: the %s prefix is tether's own (it sets %s, %s and the selector's tag)", k, tagPrefix, TagThing, TagWorkload)
			}
		}
		if j < 0 || w.Role == DeviceRole {
			continue
		}
		base := c.Roles[j]
		if (base.Policy != "" || len(base.PolicyARNs) > 0) && (w.policy != "" || w.PolicyFile != "" || len(w.PolicyARNs) > 0) {
			v.fail(policyKey, "role %q has a session policy of its own, and a second one could widen what it allows; move the policy to the workloads of that role", w.Role)
		}
		r := w.scopedRole(base, c.Identity.ThingName)
		for _, e := range flatten(assumeRoleOptions(&r).Validate()) {
			field, issue, _ := optionField(e)
			if k, ok := workloadKeys[field]; ok {
				if k == "policy" {
					v.fail(policyKey, "%s", issue)
					continue
				}
				v.fail(key+"."+k, "%s", issue)
			}
		}
		if w.policy != "" {
			// What is sent, and what decides the credentials.
			if packed, err := credprovider.PackPolicy(w.policy); err == nil {
				w.policy = packed
			}
		}
	}
}

// maxPolicyFile bounds what is read of a policy_file: a packed policy is at
// most 2048 characters, and white space cannot make it a hundred times that.
const maxPolicyFile = 256 << 10

// policyFile reads a session policy from path, for credprovider to judge.
func (v *validator) policyFile(key, path string) string {
	v.file_(key, path, true)
	if !strings.HasPrefix(path, "/") {
		return ""
	}
	f, err := os.Open(path)
	if err != nil {
		return "" // reported by file_
	}
	defer f.Close()
	b := make([]byte, maxPolicyFile+1)
	n, _ := f.Read(b)
	if n > maxPolicyFile {
		v.fail(key, "%s is larger than %d bytes; a session policy packs into at most %d characters", path, maxPolicyFile, credprovider.MaxSessionPolicyBytes)
		return ""
	}
	if n == 0 {
		v.fail(key, "%s is empty; write the session policy (JSON) into it", path)
	}
	return string(b[:n])
}

// warnHiddenPeers says, when [[workload]]s are configured, what keeps the
// agent from telling local programs apart (the hardened unit without the
// workloads.conf drop-in): those programs would get what unmapped ones get.
func (a *Agent) warnHiddenPeers() {
	if len(a.cfg.Workloads) == 0 {
		return
	}
	if err := platform.PeersHidden(); err != nil {
		a.log.Warn("[[workload]]s cannot tell local programs apart; under systemd install the workloads.conf drop-in (docs/workloads.md)", "err", err)
	}
}

// workload is a [[workload]] as a generation holds it.
type workload struct {
	name, role, selector string
	// rl is the workload's own role session (ROLE/WORKLOAD).
	rl *role
}

// workloadSet finds the workload of a peer.
type workloadSet struct {
	byUnit       map[string]*workload
	byUID, byGID map[uint32]*workload
	// gids are the gid workloads in file order, for supplementary groups.
	gids []*workload

	// units caches the units of TCP peers' cgroups by cgroup id (ids are
	// not reused while the system runs).
	mu    sync.Mutex
	units map[uint64]string
}

func newWorkloadSet() *workloadSet {
	return &workloadSet{byUnit: map[string]*workload{}, byUID: map[uint32]*workload{}, byGID: map[uint32]*workload{}, units: map[uint64]string{}}
}

// add records the workload w served by rl.
func (s *workloadSet) add(w *WorkloadConfig, rl *role) {
	wl := &workload{name: w.Name, role: w.Role, selector: w.selector(), rl: rl}
	switch {
	case w.Unit != "":
		s.byUnit[w.Unit] = wl
	case w.UID != nil:
		s.byUID[uint32(*w.UID)] = wl
	case w.GID != nil:
		s.byGID[uint32(*w.GID)] = wl
		s.gids = append(s.gids, wl)
	}
}

// match returns p's workload, nil when none picks it: by unit, else uid,
// else primary gid, else the first gid workload among its groups.
func (s *workloadSet) match(p *Peer) *workload {
	if s == nil || p == nil {
		return nil
	}
	if len(s.byUnit) > 0 {
		if w := s.byUnit[s.unitOf(p)]; w != nil {
			return w
		}
	}
	if w := s.byUID[p.UID]; w != nil {
		return w
	}
	if w := s.byGID[p.GID]; w != nil {
		return w
	}
	for _, w := range s.gids {
		for _, g := range p.Groups {
			if s.byGID[g] == w {
				return w
			}
		}
	}
	return nil
}

// maxCachedUnits bounds the cache of TCP peers' units.
const maxCachedUnits = 1024

// unitOf is p's systemd unit: read at connect time for a Unix socket peer,
// looked up by its socket's cgroup id for a TCP one; "" when unknown.
func (s *workloadSet) unitOf(p *Peer) string {
	if p.Unit != "" || p.CgroupID == 0 {
		return p.Unit
	}
	s.mu.Lock()
	u, ok := s.units[p.CgroupID]
	s.mu.Unlock()
	if ok {
		return u
	}
	path, err := platform.CgroupByID(p.CgroupID)
	if err != nil {
		return ""
	}
	u = platform.UnitOfCgroup(path)
	s.mu.Lock()
	if len(s.units) >= maxCachedUnits {
		clear(s.units)
	}
	s.units[p.CgroupID] = u
	s.mu.Unlock()
	return u
}

// refusal is why roleFor gives a peer no credentials: the HTTP status and
// the API's error code and message (which names the fix).
type refusal struct {
	Status  int
	Code    string
	Message string
}

func (r *refusal) Error() string { return r.Message }

// roleFor is the one rule that decides which credentials a local peer gets,
// for every endpoint (the Unix socket, the container endpoint, IMDS): name
// is the role asked for, "" for the peer's default (its workload's role,
// else the device role). A peer a [[workload]] picks gets that workload's
// session of its role, and no other role; other peers get the role named,
// as before. A role's own allow lists apply either way. The endpoint has
// checked the global allow lists already. Errors are *refusal.
func (a *Agent) roleFor(p *Peer, name string) (*role, error) {
	w := a.workloads.match(p)
	if name == "" {
		name = DeviceRole
		if w != nil {
			name = w.role
		}
	}
	rl, ok := a.roles[name]
	if !ok || rl.workload != "" {
		return nil, &refusal{Status: http.StatusNotFound, Code: "unknown_role",
			Message: "no role " + strconv.Quote(name) + " is configured; add a [[role]] with that name"}
	}
	if w != nil {
		if name != w.role {
			return nil, &refusal{Status: http.StatusForbidden, Code: "workload_role",
				Message: fmt.Sprintf("this program is workload %s (%s), which gets role %s only; ask for that role, or map it to %s in its [[workload]]", w.name, w.selector, w.role, name)}
		}
		rl = w.rl
	}
	if !rl.allow.Empty() && !rl.allow.Allows(p) {
		return nil, &refusal{Status: http.StatusForbidden, Code: "peer_not_allowed", Message: "the role's own allow lists leave this peer out"}
	}
	return rl, nil
}

// servedAs is the role name rl answers to: for a workload's session, its
// [[role]]'s name (the name an IMDS listing shows), else its own.
func (rl *role) servedAs() string {
	return strings.TrimSuffix(rl.name, "/"+rl.workload)
}
