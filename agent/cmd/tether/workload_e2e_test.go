package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/agent/agenttest"
)

// TestConfigCheckWorkloads ensures that config check reports each
// [[workload]] mistake STS would refuse on a line of its own, with exit 2,
// and prints a valid workload back, its policy file read.
func TestConfigCheckWorkloads(t *testing.T) {
	const role = "[[role]]\nname = \"telemetry\"\nrole_arn = \"arn:aws:iam::123456789012:role/telemetry\"\n"
	e := agenttest.New(t, time.Hour, role+`
[[workload]]
name            = "uploader"
unit            = "uploader.service"
role            = "telemetry"
source_identity = "uploader service"
tags            = { "tether:unit" = "x", team = "a,b" }
`)
	code, _, stderr := tether(t, []string{"AWS_CONFIG_FILE=/dev/null"}, "config", "check", "-c", e.Config)
	assert.Equal(t, 2, code)
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	assert.Len(t, lines, 3, stderr)
	assert.Contains(t, stderr, `workload[0].source_identity: "uploader service" is not valid`)
	assert.Contains(t, stderr, `workload[0].tags: tag "tether:unit": the tether: prefix is tether's own`)
	assert.Contains(t, stderr, `workload[0].tags: tag "team": values are at most 256`)

	policy := filepath.Join(e.Dir, "uploader.json")
	require.NoError(t, os.WriteFile(policy, []byte(`{"Version": "2012-10-17", "Statement": []}`), 0o644))
	e.WriteConfig(role + "[[workload]]\nname = \"uploader\"\nunit = \"uploader.service\"\nrole = \"telemetry\"\npolicy_file = \"" + policy + "\"\n")
	code, stdout, stderr := tether(t, []string{"AWS_CONFIG_FILE=/dev/null"}, "config", "check", "-c", e.Config)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "[[workload]]")
	assert.Contains(t, stdout, "unit = 'uploader.service'")
}
