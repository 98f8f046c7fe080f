package main

import (
	"bytes"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetherd/tether/agent/agenttest"
	"github.com/tetherd/tether/credprovider/imds"
)

// BenchmarkRolesAnywhere: credentials over loopback TCP from tether and
// from the IAM Roles Anywhere credential helper's `serve` (its IMDSv2
// endpoint), 8 keep-alive clients of the same load generator in a process
// of its own, in alternating 2-second rounds (medians of 5; the ratios are the medians of the rounds' ratios). The helper is
// not part of tether: RAH_BIN names a binary built from
// github.com/aws/rolesanywhere-credential-helper, which gets its
// CreateSession answered by a local fake over TLS. tether serves its IMDSv2
// endpoint when the build has one (serve.imds_endpoint), else its container
// endpoint; the metric's name says which. Both are also given as a share
// of the floor, a bare net/http server on loopback TCP answering tether's
// body. cpu-per-request-ratio is tether's CPU time per request over the
// helper's (see BenchmarkSocket). Goal: ≥ 1.2× the helper.
func BenchmarkRolesAnywhere(b *testing.B) {
	rah := os.Getenv("RAH_BIN")
	if rah == "" {
		b.Skip("RAH_BIN is not set: build github.com/aws/rolesanywhere-credential-helper outside this tree and set RAH_BIN to its aws_signing_helper binary")
	}
	e := agenttest.New(b, time.Hour, "")
	var sessions atomic.Int64
	rahAddr, rahPid := startRolesAnywhere(b, rah, e, &sessions)
	rahTarget := imdsTarget(b, rahAddr)

	port := agenttest.FreePort(b)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	kind := "imds"
	e.WriteConfig("", "[serve]\n", "[serve]\nimds_endpoint = \""+addr+"\"\n")
	if out, err := exec.Command(tetherBin, "config", "check", "-c", e.Config).CombinedOutput(); err != nil {
		// This build has no IMDS endpoint: its container endpoint is the
		// same kind of server (loopback HTTP with a token).
		b.Logf("no serve.imds_endpoint in this build (%s); comparing the container endpoint", bytes.TrimSpace(out))
		kind = "container"
		e.WriteConfig("", "[serve]\n", "[serve]\ncontainer_endpoint = \""+addr+"\"\n")
	}
	tetherPid := startAgentB(b, e).Process.Pid
	var tetherTarget []string
	if kind == "imds" {
		tetherTarget = imdsTarget(b, addr)
	} else {
		tok, err := os.ReadFile(e.Token)
		if err != nil {
			b.Fatal(err)
		}
		tetherTarget = []string{"-tcp", addr, "-path", "/2016-11-01/credentialprovider/", "-header", "Authorization: " + strings.TrimSpace(string(tok))}
	}
	// The floor: a bare net/http server on loopback TCP answering tether's
	// body, what any Go server of this kind costs at least.
	body := httpGet(b, tetherTarget)
	bodyFile := filepath.Join(b.TempDir(), "body.json")
	if err := os.WriteFile(bodyFile, body, 0o600); err != nil {
		b.Fatal(err)
	}
	floorAddr := "127.0.0.1:" + strconv.Itoa(agenttest.FreePort(b))
	startBareProgram(b, strings.Replace(bareServer, `net.Listen("unix"`, `net.Listen("tcp"`, 1), floorAddr, bodyFile)
	floorTarget := []string{"-tcp", floorAddr, "-path", "/"}
	load := buildSockload(b)
	for _, clients := range []int{1, 8} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			common := []string{"-clients", strconv.Itoa(clients), "-duration", "2s"}
			for b.Loop() {
				var ts, rs, fs []agenttest.LoadResult
				before := sessions.Load()
				var ratio, p99, cpu []float64
				for i := range 5 {
					fs = append(fs, sockloadArgs(b, load, append(floorTarget, common...)...))
					r0 := cpuTime(b, rahPid)
					rs = append(rs, sockloadArgs(b, load, append(rahTarget, common...)...))
					rahCPU := cpuTime(b, rahPid) - r0
					t0 := cpuTime(b, tetherPid)
					ts = append(ts, sockloadArgs(b, load, append(tetherTarget, common...)...))
					tetherCPU := cpuTime(b, tetherPid) - t0
					cpu = append(cpu, (float64(tetherCPU)/float64(ts[i].Requests))/(float64(rahCPU)/float64(rs[i].Requests)))
					ratio = append(ratio, ts[i].RPS/rs[i].RPS)
					p99 = append(p99, float64(ts[i].P99)/float64(rs[i].P99))
				}
				t, r, f := medianLoad(ts), medianLoad(rs), medianLoad(fs)
				b.ReportMetric(f.RPS, "floor-req/s")
				b.ReportMetric(t.RPS/f.RPS, "tether-of-floor")
				b.ReportMetric(r.RPS/f.RPS, "rah-of-floor")
				b.ReportMetric(t.RPS, "tether-"+kind+"-req/s")
				b.ReportMetric(r.RPS, "rah-req/s")
				b.ReportMetric(medianOf(ratio), "throughput-ratio")
				b.ReportMetric(float64(t.P99.Microseconds()), "tether-p99-µs")
				b.ReportMetric(float64(r.P99.Microseconds()), "rah-p99-µs")
				b.ReportMetric(medianOf(p99), "p99-ratio")
				b.ReportMetric(medianOf(cpu), "cpu-per-request-ratio")
				// 0: the helper served what it holds, as tether does.
				b.ReportMetric(float64(sessions.Load()-before), "rah-create-sessions")
			}
		})
	}
}

// startRolesAnywhere runs the helper's `serve` with e's device identity
// against a fake CreateSession over TLS, and returns its address once it
// answers. sessions counts the CreateSession calls.
func startRolesAnywhere(b *testing.B, bin string, e *agenttest.Env, sessions *atomic.Int64) (addr string, pid int) {
	session := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sessions.Add(1)
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"credentialSet":[{"assumedRoleUser":{"arn":"arn:aws:sts::123456789012:assumed-role/bench/gw-0001","assumedRoleId":"AROABENCH:gw-0001"},`+
			`"credentials":{"accessKeyId":"ASIABENCHROLESANYWHERE","secretAccessKey":%q,"sessionToken":%q,"expiration":%q},`+
			`"packedPolicySize":0,"roleArn":"arn:aws:iam::123456789012:role/bench","sourceIdentity":""}],"subjectArn":"arn:aws:rolesanywhere:us-east-1:123456789012:subject/bench"}`,
			strings.Repeat("s", 40), strings.Repeat("t", 600), time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	}))
	b.Cleanup(session.Close)
	ca := filepath.Join(b.TempDir(), "session-ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: session.Certificate().Raw}), 0o600); err != nil {
		b.Fatal(err)
	}
	port := agenttest.FreePort(b)
	cmd := exec.Command(bin, "serve", "--port", strconv.Itoa(port),
		"--certificate", e.CertFile, "--private-key", e.KeyFile,
		"--trust-anchor-arn", "arn:aws:rolesanywhere:us-east-1:123456789012:trust-anchor/bench",
		"--profile-arn", "arn:aws:rolesanywhere:us-east-1:123456789012:profile/bench",
		"--role-arn", "arn:aws:iam::123456789012:role/bench",
		"--region", "us-east-1", "--endpoint", session.URL)
	// The SDK inside the helper trusts AWS_CA_BUNDLE alone when it is set.
	cmd.Env = append(os.Environ(), "SSL_CERT_FILE="+ca, "AWS_CA_BUNDLE="+ca)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr = "127.0.0.1:" + strconv.Itoa(port)
	for start := time.Now(); ; time.Sleep(50 * time.Millisecond) {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return addr, cmd.Process.Pid
		}
		if time.Since(start) > 10*time.Second {
			b.Fatalf("the Roles Anywhere helper does not listen on %s: %s", addr, stderr.String())
		}
	}
}

// httpGet sends one GET that the load generator's arguments describe and
// returns the body.
func httpGet(b *testing.B, args []string) []byte {
	req, err := http.NewRequest(http.MethodGet, "http://"+args[1]+args[3], nil)
	if err != nil {
		b.Fatal(err)
	}
	for i := 4; i+1 < len(args); i += 2 {
		name, value, _ := strings.Cut(args[i+1], ": ")
		req.Header.Set(name, value)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		b.Fatalf("GET %s: %v %s", req.URL, err, resp.Status)
	}
	return body
}

// imdsTarget gets an IMDSv2 token from the endpoint at addr and the role
// it serves, and returns the load generator's arguments for that role's
// credentials.
func imdsTarget(b *testing.B, addr string) []string {
	do := func(method, path string, h http.Header) string {
		req, err := http.NewRequest(method, "http://"+addr+path, nil)
		if err != nil {
			b.Fatal(err)
		}
		req.Header = h
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("%s %s on %s: %s: %s", method, path, addr, resp.Status, body)
		}
		return strings.TrimSpace(string(body))
	}
	tok := do(http.MethodPut, imds.TokenPath, http.Header{imds.TTLHeader: {"21600"}})
	h := http.Header{imds.TokenHeader: {tok}}
	role := do(http.MethodGet, imds.CredentialsPath, h)
	do(http.MethodGet, imds.CredentialsPath+role, h)
	return []string{"-tcp", addr, "-path", imds.CredentialsPath + role, "-header", imds.TokenHeader + ": " + tok}
}
