package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tetherd/tether/agent"
	"github.com/tetherd/tether/agent/agenttest"
	"github.com/tetherd/tether/mqtt/mqtttest"
)

// buildSockload builds the load generator that runs as a process of its own.
func buildSockload(b *testing.B) string {
	bin := filepath.Join(b.TempDir(), "sockload")
	if out, err := exec.Command("go", "build", "-trimpath", "-o", bin, "github.com/tetherd/tether/softhsm-test/sockload").CombinedOutput(); err != nil {
		b.Fatalf("building sockload: %v\n%s", err, out)
	}
	return bin
}

// sockload runs the load generator against socket and returns what it measured.
func sockload(b *testing.B, bin, socket, path string, clients int, d time.Duration, n int) agenttest.LoadResult {
	return sockloadArgs(b, bin, "-socket", socket, "-path", path, "-clients", strconv.Itoa(clients),
		"-duration", d.String(), "-n", strconv.Itoa(n))
}

// sockloadArgs runs the load generator with args (see softhsm-test/sockload).
func sockloadArgs(b *testing.B, bin string, args ...string) agenttest.LoadResult {
	out, err := exec.Command(bin, args...).Output()
	if err != nil {
		b.Fatalf("sockload %v: %v", args, err)
	}
	var r agenttest.LoadResult
	if err := json.Unmarshal(out, &r); err != nil {
		b.Fatalf("sockload printed %q: %v", out, err)
	}
	return r
}

// BenchmarkSocket: GET /v1/credentials on the running agent's Unix socket
// against the floor, a bare net/http server on a Unix socket answering the
// same body, both driven by the same load generator in a process of its own,
// in alternating 1.5-second rounds, 7 of each, after the agent's second
// trim of start-up memory (which would make one round fault its code back
// in). Reported: the medians of each side, and the ratios as the median of
// the 7 neighbouring pairs' ratios, which a machine whose load drifts
// between rounds disturbs less; and the CPU time each server spent per
// request (utime + stime), as a ratio: on a saturated machine throughput
// measures the share of CPU the scheduler gives a process more than its
// cost. Goals with 8 clients: throughput ratio ≥ 0.9, p99 ratio ≤ 1.25.
func BenchmarkSocket(b *testing.B) {
	e := agenttest.New(b, time.Hour, "")
	agentPid := startAgentB(b, e).Process.Pid
	c, err := agent.FetchCredentials(context.Background(), e.Socket, "")
	if err != nil {
		b.Fatal(err)
	}
	body, _ := json.Marshal(c)
	bodyFile := filepath.Join(b.TempDir(), "body.json")
	if err := os.WriteFile(bodyFile, append(body, '\n'), 0o600); err != nil {
		b.Fatal(err)
	}
	floorSock := filepath.Join(b.TempDir(), "floor.sock")
	floorPid := startBareServer(b, floorSock, bodyFile).Process.Pid
	load := buildSockload(b)
	time.Sleep(16 * time.Second) // past agent.trimAfter
	for _, clients := range []int{1, 8} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			for b.Loop() {
				var ag, fl []agenttest.LoadResult
				var rps, p99, cpu []float64
				var agCPU, flCPU time.Duration
				for i := range 7 {
					// Who goes first alternates too.
					f := func() {
						t0 := cpuTime(b, floorPid)
						fl = append(fl, sockload(b, load, floorSock, "/", clients, 1500*time.Millisecond, 0))
						flCPU = cpuTime(b, floorPid) - t0
					}
					a := func() {
						t0 := cpuTime(b, agentPid)
						ag = append(ag, sockload(b, load, e.Socket, "/v1/credentials", clients, 1500*time.Millisecond, 0))
						agCPU = cpuTime(b, agentPid) - t0
					}
					if i%2 == 0 {
						f()
						a()
					} else {
						a()
						f()
					}
					rps = append(rps, ag[i].RPS/fl[i].RPS)
					p99 = append(p99, float64(ag[i].P99)/float64(fl[i].P99))
					cpu = append(cpu, (float64(agCPU)/float64(ag[i].Requests))/(float64(flCPU)/float64(fl[i].Requests)))
				}
				a, f := medianLoad(ag), medianLoad(fl)
				b.ReportMetric(a.RPS, "agent-req/s")
				b.ReportMetric(f.RPS, "floor-req/s")
				b.ReportMetric(medianOf(rps), "throughput-ratio")
				b.ReportMetric(float64(a.P99.Microseconds()), "agent-p99-µs")
				b.ReportMetric(float64(f.P99.Microseconds()), "floor-p99-µs")
				b.ReportMetric(medianOf(p99), "p99-ratio")
				// What a request costs the server, which a saturated
				// machine does not distort as it does throughput (that
				// then measures the share of CPU the scheduler gives).
				b.ReportMetric(medianOf(cpu), "cpu-per-request-ratio")
			}
		})
	}
}

// cpuTime is the CPU time pid's threads have used (utime + stime, in
// clock ticks of 10 ms).
func cpuTime(b *testing.B, pid int) time.Duration {
	raw, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		b.Fatal(err)
	}
	// The fields after the command name, which is in parentheses.
	f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+1:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// medianOf returns the median of xs, which it sorts.
func medianOf(xs []float64) float64 {
	slices.Sort(xs)
	return xs[len(xs)/2]
}

// medianLoad is the median round by throughput, with the median p99.
func medianLoad(rs []agenttest.LoadResult) agenttest.LoadResult {
	rps := make([]float64, len(rs))
	p99 := make([]time.Duration, len(rs))
	for i, r := range rs {
		rps[i], p99[i] = r.RPS, r.P99
	}
	slices.Sort(rps)
	slices.Sort(p99)
	return agenttest.LoadResult{RPS: rps[len(rps)/2], P99: p99[len(p99)/2]}
}

// smaps is a process's /proc/PID/smaps_rollup, in kB.
type smaps struct{ rss, pss, pssAnon, pssFile, anon float64 }

func readSmaps(b *testing.B, pid int) smaps {
	return smaps{
		rss:     readKB(b, pid, "smaps_rollup", "Rss"),
		pss:     readKB(b, pid, "smaps_rollup", "Pss"),
		pssAnon: readKB(b, pid, "smaps_rollup", "Pss_Anon"),
		pssFile: readKB(b, pid, "smaps_rollup", "Pss_File"),
		anon:    readKB(b, pid, "smaps_rollup", "Anonymous"),
	}
}

// BenchmarkMemory: the agent idle with credentials and an MQTT session
// connected to mosquitto (mTLS, MQTT v5), from /proc/PID/smaps_rollup (RSS,
// PSS and its anonymous and file-backed parts) and the Go runtime's own
// breakdown from /v1/status; then, warmed up by 10,000 requests, its growth
// after 1,000,000 more from the load generator, what it holds right after
// them ("after-burst") and once it has trimmed itself at the next quiet
// period ("after-idle-trim", agent.idleTrimDue); and the same agent's idle
// figures with the trim off (TETHER_TRIM=off, "untrimmed"). The baseline is
// a bare net/http server on a Unix socket, idle, in the same run. Goals:
// PSS ≤ 8 MB, anonymous ≤ 3 MB, growth ≤ 1 MB.
//
// TETHER_BENCH_REQUESTS=N sends N requests instead of 1,000,000;
// TETHER_BENCH_REQUESTS=0 measures idle only (the trimmed and untrimmed
// idle figures, no warm-up, burst or idle trim after it), about a minute a
// build, for quick iterations on idle memory.
func BenchmarkMemory(b *testing.B) {
	builds := [][2]string{{"cgo", tetherBin}}
	if dist := os.Getenv("TETHER_DIST"); dist != "" {
		// The static build is what most gateways run: no libc, no threads
		// of its own.
		builds = append(builds, [2]string{"static", filepath.Join(dist, "tether-linux-"+runtime.GOARCH)})
	}
	base := startBareServer(b, filepath.Join(b.TempDir(), "bare.sock"), "")
	load := buildSockload(b)
	n := 1_000_000
	if s := os.Getenv("TETHER_BENCH_REQUESTS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 0 {
			b.Fatalf("TETHER_BENCH_REQUESTS=%q: want a number of requests, 0 for idle only", s)
		}
	}
	for _, build := range builds {
		b.Run("build="+build[0], func(b *testing.B) {
			for b.Loop() {
				p, e := startMemoryAgent(b, build[1], nil)
				memoryRun(b, p.Process.Pid, base.Process.Pid, e.Socket, load, n)
				stopAgentB(p)
				p, e = startMemoryAgent(b, build[1], []string{"TETHER_TRIM=off"})
				time.Sleep(20 * time.Second)
				m := readSmaps(b, p.Process.Pid)
				b.ReportMetric(m.rss/1024, "untrimmed-idle-rss-MB")
				b.ReportMetric(m.pss/1024, "untrimmed-idle-pss-MB")
				b.ReportMetric(m.anon/1024, "untrimmed-idle-anon-MB")
				stopAgentB(p)
			}
		})
	}
}

// startMemoryAgent starts bin with credentials and an MQTT session to a
// broker of its own, with env added to the agent's environment, and waits
// until the session is connected.
func startMemoryAgent(b *testing.B, bin string, env []string) (*exec.Cmd, *agenttest.Env) {
	e := agenttest.New(b, time.Hour, "")
	// One test PKI for both: the broker trusts the simulator's device.
	broker := mqtttest.NewBroker(b, mqtttest.Options{PKI: e.Sim.PKI})
	e.WriteConfig(fmt.Sprintf("\n[mqtt]\nendpoint = %q\nca_file = %q\n", broker.Addr, broker.CAFile))
	cmd := exec.Command(bin, "run", "-c", e.Config)
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { stopAgentB(cmd) })
	e.WaitNotify("READY=1")
	waitStatus(b, e.Socket, func(st *agent.Status) bool { return st.MQTT != nil && st.MQTT.State == "connected" })
	return cmd, e
}

func memoryRun(b *testing.B, pid, basePid int, socket, load string, n int) {
	// Idle: past the agent's second trim of start-up memory (agent.trimAfter).
	time.Sleep(20 * time.Second)
	m, bm := readSmaps(b, pid), readSmaps(b, basePid)
	st, err := agent.FetchStatus(context.Background(), socket)
	if err != nil {
		b.Fatal(err)
	}
	mb := func(v uint64) float64 { return float64(v) / (1 << 20) }
	b.ReportMetric(m.rss/1024, "idle-rss-MB")
	b.ReportMetric(m.pss/1024, "idle-pss-MB")
	b.ReportMetric(m.pssFile/1024, "idle-pss-file-MB")
	b.ReportMetric(m.anon/1024, "idle-anon-MB")
	b.ReportMetric(mb(st.Memory.HeapInUse), "idle-heap-in-use-MB")
	b.ReportMetric(mb(st.Memory.HeapFree+st.Memory.HeapUnused), "idle-heap-free-MB")
	b.ReportMetric(mb(st.Memory.Stacks), "idle-stacks-MB")
	b.ReportMetric(mb(st.Memory.Metadata), "idle-runtime-metadata-mapped-MB")
	b.ReportMetric(float64(st.Memory.Goroutines), "idle-goroutines")
	b.ReportMetric(mb(st.Memory.Mapped), "idle-go-mapped-MB")
	b.ReportMetric(bm.pss/1024, "bare-server-pss-MB")
	b.ReportMetric(bm.anon/1024, "bare-server-anon-MB")
	b.ReportMetric(bm.pssFile/1024, "bare-server-pss-file-MB")
	b.ReportMetric(m.pss/bm.pss, "pss-ratio")
	b.ReportMetric(m.anon/bm.anon, "anon-ratio")
	if n == 0 {
		return // TETHER_BENCH_REQUESTS=0: idle only
	}
	// Growth is measured from a warmed-up agent: the first requests fault
	// back in the request path's code that the trim gave back.
	sockload(b, load, socket, "/v1/credentials", 8, time.Hour, 10_000)
	warm := readSmaps(b, pid)
	r := sockload(b, load, socket, "/v1/credentials", 8, time.Hour, n)
	after := readSmaps(b, pid)
	b.ReportMetric(warm.rss/1024, "warm-rss-MB")
	b.ReportMetric(warm.pss/1024, "warm-pss-MB")
	b.ReportMetric(float64(r.Requests), "requests")
	b.ReportMetric((after.rss-warm.rss)/1024, "rss-growth-MB")
	b.ReportMetric((after.anon-warm.anon)/1024, "anon-growth-MB")
	b.ReportMetric(after.rss/1024, "after-burst-rss-MB")
	b.ReportMetric(after.pss/1024, "after-burst-pss-MB")
	b.ReportMetric(after.anon/1024, "after-burst-anon-MB")
	// The agent trims at the end of the first quiet period after the burst
	// (agent.idleTrimPeriod, 30 s): within two periods.
	start := time.Now()
	trimmed := after
	for time.Since(start) < 75*time.Second && trimmed.pss > after.pss*0.8 {
		time.Sleep(5 * time.Second)
		trimmed = readSmaps(b, pid)
	}
	b.ReportMetric(trimmed.rss/1024, "after-idle-trim-rss-MB")
	b.ReportMetric(trimmed.pss/1024, "after-idle-trim-pss-MB")
	b.ReportMetric(trimmed.anon/1024, "after-idle-trim-anon-MB")
	b.ReportMetric(time.Since(start).Seconds(), "idle-trim-after-s")
}

// BenchmarkBinarySize: the static release binaries that `make static` left
// in TETHER_DIST (bench.sh sets it), against a bare net/http server built
// for the same architecture with the same flags, in the same run. Goal:
// arm64 ≤ 10 MB.
func BenchmarkBinarySize(b *testing.B) {
	dist := os.Getenv("TETHER_DIST")
	if dist == "" {
		b.Skip("TETHER_DIST is not set: run make bench, which runs make static first")
	}
	for b.Loop() {
		for _, arch := range []string{"arm64", "amd64", "arm"} {
			name := "tether-linux-" + arch
			if arch == "arm" {
				name = "tether-linux-armv7"
			}
			st, err := os.Stat(filepath.Join(dist, name))
			if err != nil {
				b.Fatalf("%v: run make static", err)
			}
			floor := buildBareFor(b, bareServer, arch)
			b.ReportMetric(float64(st.Size())/1e6, arch+"-MB")
			b.ReportMetric(float64(st.Size())/float64(floor), arch+"-ratio-to-bare-server")
		}
	}
}
