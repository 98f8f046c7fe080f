package agent

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// workloadBase is a configuration with two STS roles for workloads to use.
func workloadBase(dir string) string {
	return minimalConfig(dir) + `
[[role]]
name     = "telemetry"
role_arn = "arn:aws:iam::123456789012:role/telemetry"
tags     = { site = "plant-7" }

[[role]]
name     = "narrow"
role_arn = "arn:aws:iam::123456789012:role/narrow"
policy   = '{"Version":"2012-10-17"}'

[[role]]
name               = "vault"
credential_command = ["/usr/bin/vault-creds"]
`
}

// TestWorkloadConfigErrors ensures that each [[workload]] mistake is
// reported with its index and key, the STS rules coming from credprovider.
func TestWorkloadConfigErrors(t *testing.T) {
	dir := writeIdentityFiles(t)
	base := workloadBase(dir)
	badJSON := filepath.Join(dir, "bad.json")
	require.NoError(t, os.WriteFile(badJSON, []byte(`{"Version":`), 0o644))
	big := filepath.Join(dir, "big.json")
	require.NoError(t, os.WriteFile(big, []byte(`{"Sid":"`+strings.Repeat("x", 2050)+`"}`), 0o644))
	w := func(extra string) string { return base + "[[workload]]\nname = \"up\"\nrole = \"telemetry\"\n" + extra }
	for _, tc := range []struct {
		name, cfg string
		want      []string
	}{
		{"no selector", w(""), []string{"workload[0]: set exactly one of unit, uid and gid"}},
		{"two selectors", w("unit = \"up.service\"\nuid = 1001\n"), []string{"workload[0]: set exactly one of unit, uid and gid"}},
		{"template unit", w("unit = \"up@.service\"\n"), []string{"workload[0].unit: \"up@.service\" is not a systemd unit name"}},
		{"uid out of range", w("uid = -1\n"), []string{"workload[0].uid: -1 is not a valid id"}},
		{"uid a string", w("uid = \"1001\"\n"), []string{"workload.uid: is a string; want an integer"}},
		{"same unit twice", w("unit = \"up.service\"\n") + "[[workload]]\nname = \"b\"\nrole = \"telemetry\"\nunit = \"up.service\"\n",
			[]string{"workload[1]: unit up.service is already picked by workload[0]"}},
		{"same name twice", w("uid = 1\n") + "[[workload]]\nname = \"up\"\nrole = \"telemetry\"\nuid = 2\n", []string{"workload[1].name: \"up\" is already the name of workload[0]"}},
		{"device role", base + "[[workload]]\nname = \"up\"\nrole = \"device\"\nuid = 1\n", []string{"workload[0].role: the device role comes from the IoT role alias"}},
		{"unknown role", base + "[[workload]]\nname = \"up\"\nrole = \"nope\"\nuid = 1\n", []string{"workload[0].role: role \"nope\" is not defined"}},
		{"no role", base + "[[workload]]\nname = \"up\"\nuid = 1\n", []string{"workload[0].role: missing"}},
		{"command role", base + "[[workload]]\nname = \"up\"\nrole = \"vault\"\nuid = 1\n", []string{"workload[0].role: role \"vault\" does not use STS AssumeRole"}},
		{"policy and file", w("uid = 1\npolicy = '{}'\npolicy_file = \"" + badJSON + "\"\n"), []string{"workload[0].policy_file: and policy are both set"}},
		{"policy not JSON", w("uid = 1\npolicy = '{nope'\n"), []string{"workload[0].policy: is not valid JSON"}},
		{"policy file not JSON", w("uid = 1\npolicy_file = \"" + badJSON + "\"\n"), []string{"workload[0].policy_file: is not valid JSON"}},
		{"policy file too long", w("uid = 1\npolicy_file = \"" + big + "\"\n"), []string{"workload[0].policy_file: is 2060 characters without white space; STS accepts at most 2048"}},
		{"policy file missing", w("uid = 1\npolicy_file = \"" + dir + "/nope.json\"\n"), []string{"workload[0].policy_file: " + dir + "/nope.json: no such file"}},
		{"second policy", base + "[[workload]]\nname = \"up\"\nrole = \"narrow\"\nuid = 1\npolicy = '{}'\n", []string{"workload[0].policy: role \"narrow\" has a session policy of its own"}},
		{"tether tag", w("uid = 1\ntags = { \"Tether:unit\" = \"x\" }\n"), []string{"workload[0].tags: tag \"Tether:unit\": the tether: prefix is tether's own"}},
		{"tag grammar", w("uid = 1\ntags = { team = \"a,b\" }\n"), []string{"workload[0].tags: tag \"team\": values are at most 256"}},
		{"source identity grammar", w("uid = 1\nsource_identity = \"a b\"\n"), []string{"workload[0].source_identity: \"a b\" is not valid"}},
		{"session name grammar", w("uid = 1\nsession_name = \"x\"\n"), []string{"workload[0].session_name: \"x\" is not a valid session name"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig("t.toml", []byte(tc.cfg))
			require.Error(t, err)
			for _, want := range tc.want {
				assert.Contains(t, err.Error(), want)
			}
			assert.NotContains(t, err.Error(), "role[0]", "a workload's mistake is not its role's")
		})
	}
}

// TestWorkloadSession ensures that a workload's session carries its
// policy (packed, from a file), the role's tags and tether's, and a source
// identity and session name that name the unit and the thing; and that the
// key its credentials are cached under changes with each of those and with
// nothing else.
func TestWorkloadSession(t *testing.T) {
	dir := writeIdentityFiles(t)
	policy := filepath.Join(dir, "uploader.json")
	require.NoError(t, os.WriteFile(policy, []byte("{\n  \"Version\": \"2012-10-17\",\n  \"Statement\": []\n}\n"), 0o644))
	cfg := workloadBase(dir) + `
[[workload]]
name        = "uploader"
unit        = "uploader.service"
role        = "telemetry"
policy_file = "` + policy + `"
tags        = { team = "data" }

[[workload]]
name = "ops"
gid  = 27
role = "telemetry"
`
	c, err := ParseConfig("t.toml", []byte(cfg))
	require.NoError(t, err)
	scoped := c.scopedRoles()
	require.Len(t, scoped, 2)
	up, ops := scoped[0], scoped[1]
	assert.Equal(t, "telemetry/uploader", up.Name)
	assert.Equal(t, "arn:aws:iam::123456789012:role/telemetry", up.RoleARN)
	assert.Equal(t, `{"Version":"2012-10-17","Statement":[]}`, up.Policy)
	assert.Equal(t, map[string]string{"site": "plant-7", "team": "data", TagThing: "gw-0001", TagWorkload: "uploader", TagUnit: "uploader.service"}, up.Tags)
	assert.Equal(t, "uploader.service@gw-0001", up.SourceIdentity)
	assert.Equal(t, "uploader@gw-0001", up.SessionName)
	assert.Equal(t, map[string]string{"site": "plant-7", TagThing: "gw-0001", TagWorkload: "ops", TagGID: "27"}, ops.Tags)
	assert.Equal(t, "ops@gw-0001", ops.SourceIdentity)
	assert.Empty(t, ops.Policy)

	a := &Agent{roles: roleSet{DeviceRole: {name: DeviceRole, cacheKey: "device#1"}}}
	key := func(r RoleConfig) string { return a.roleKey(&r).storeKey(r.Name) }
	telemetry := c.Roles[0]
	seen := map[string]string{key(telemetry): "role", key(up): "uploader", key(ops): "ops"}
	assert.Len(t, seen, 3, "each workload has credentials of its own")

	// The policy's white space does not decide the credentials.
	require.NoError(t, os.WriteFile(policy, []byte(`{"Version": "2012-10-17", "Statement": [ ]}`), 0o644))
	c2, err := ParseConfig("t.toml", []byte(cfg))
	require.NoError(t, err)
	assert.Equal(t, key(up), key(c2.scopedRoles()[0]))
	// Its content does.
	require.NoError(t, os.WriteFile(policy, []byte(`{"Version": "2012-10-17", "Statement": [{}]}`), 0o644))
	c3, err := ParseConfig("t.toml", []byte(cfg))
	require.NoError(t, err)
	assert.NotEqual(t, key(up), key(c3.scopedRoles()[0]))
	// So does the unit, which its tags and source identity name.
	c4, err := ParseConfig("t.toml", []byte(strings.Replace(cfg, `unit        = "uploader.service"`, `unit = "other.service"`, 1)))
	require.NoError(t, err)
	assert.NotEqual(t, key(c3.scopedRoles()[0]), key(c4.scopedRoles()[0]))
}

// TestRoleFor ensures that a peer's workload is found by unit, then uid,
// then primary gid, then supplementary groups in file order; that a picked
// peer gets its workload's session and no other role, unmapped peers what
// they ask for, and that no request names a workload's session directly.
func TestRoleFor(t *testing.T) {
	a := &Agent{roles: roleSet{}, workloads: newWorkloadSet()}
	for _, n := range []string{DeviceRole, "telemetry", "audit", "secret"} {
		a.roles[n] = &role{name: n}
	}
	a.roles["secret"].allow = AllowList{UIDs: []int{1001}}
	uid, gid, gid2, gid3 := 1001, 27, 28, 29
	for _, w := range []WorkloadConfig{
		{Name: "uploader", Unit: "uploader.service", Role: "telemetry"},
		{Name: "alice", UID: &uid, Role: "telemetry"},
		{Name: "sudo", GID: &gid, Role: "audit"},
		{Name: "plugdev", GID: &gid2, Role: "telemetry"},
		{Name: "vault", GID: &gid3, Role: "secret"},
	} {
		rl := &role{name: w.Role + "/" + w.Name, workload: w.Name, allow: a.roles[w.Role].allow}
		a.roles[rl.name] = rl
		a.workloads.add(&w, rl)
	}
	for _, tc := range []struct {
		name string
		peer *Peer
		ask  string
		want string // the record served, or the refusal's code
	}{
		{"unit wins over uid", &Peer{UID: 1001, Unit: "uploader.service"}, "", "telemetry/uploader"},
		{"uid wins over gid", &Peer{UID: 1001, GID: 27}, "", "telemetry/alice"},
		{"primary gid", &Peer{UID: 1001, GID: 27, Unit: "other.service"}, "", "telemetry/alice"},
		{"gid", &Peer{UID: 5, GID: 27, Unit: "x.service"}, "", "audit/sudo"},
		{"primary gid before groups", &Peer{UID: 5, GID: 28, Groups: []uint32{27}}, "", "telemetry/plugdev"},
		{"groups in file order", &Peer{UID: 5, GID: 5, Groups: []uint32{28, 27}}, "", "audit/sudo"},
		{"the role's own allow lists still apply", &Peer{UID: 5, GID: 29}, "", "peer_not_allowed"},
		{"its role by name", &Peer{Unit: "uploader.service", UID: 7}, "telemetry", "telemetry/uploader"},
		{"another role", &Peer{Unit: "uploader.service", UID: 7}, DeviceRole, "workload_role"},
		{"unknown role", &Peer{Unit: "uploader.service", UID: 7}, "nope", "unknown_role"},
		{"unmapped: the device role", &Peer{UID: 7, Unit: "other.service"}, "", DeviceRole},
		{"unmapped: any role", &Peer{UID: 7}, "telemetry", "telemetry"},
		{"unknown peer", nil, "", DeviceRole},
		{"a session by its name", &Peer{UID: 7}, "telemetry/uploader", "unknown_role"},
		{"a session by its name, even its own", &Peer{Unit: "uploader.service"}, "telemetry/uploader", "unknown_role"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rl, err := a.roleFor(tc.peer, tc.ask)
			if err != nil {
				rf, ok := err.(*refusal)
				require.True(t, ok, "%T", err)
				assert.Equal(t, tc.want, rf.Code, rf.Message)
				assert.Contains(t, []int{http.StatusForbidden, http.StatusNotFound}, rf.Status)
				return
			}
			assert.Equal(t, tc.want, rl.name)
			assert.Equal(t, strings.Split(tc.want, "/")[0], rl.servedAs())
		})
	}
}
