// Command sockload is the load generator of `make bench`: keep-alive HTTP/1.1
// clients on a Unix socket or a loopback TCP endpoint, run as a process of
// its own so that the server under test and the baseline it is compared
// with get the same client. It prints one JSON line: requests, rps, p50 and
// p99 (nanoseconds).
//
//	sockload -socket /run/tether/tether.sock -path /v1/credentials -clients 8 -duration 2s
//	sockload -tcp 127.0.0.1:2020 -path /2016-11-01/credentialprovider/ -header "Authorization: TOKEN"
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/tetherd/tether/agent/agenttest"
)

// headers collects repeated -header "Name: value" flags.
type headers http.Header

func (h headers) String() string { return "" }

func (h headers) Set(v string) error {
	name, value, ok := strings.Cut(v, ":")
	if !ok || strings.TrimSpace(name) == "" {
		return fmt.Errorf("want Name: value, got %q", v)
	}
	http.Header(h).Add(strings.TrimSpace(name), strings.TrimSpace(value))
	return nil
}

func main() {
	socket := flag.String("socket", "", "the Unix socket")
	tcp := flag.String("tcp", "", "a TCP host:port instead of -socket")
	path := flag.String("path", "/v1/credentials", "the path to GET")
	hdr := headers{}
	flag.Var(hdr, "header", "a request header, Name: value (repeatable)")
	clients := flag.Int("clients", 8, "concurrent connections")
	d := flag.Duration("duration", 2*time.Second, "how long to run")
	n := flag.Int("n", 0, "stop after this many requests (0: no limit)")
	flag.Parse()
	t := agenttest.LoadTarget{Network: "unix", Address: *socket, Path: *path, Header: http.Header(hdr)}
	if *tcp != "" {
		t.Network, t.Address = "tcp", *tcp
	}
	if (*socket == "") == (*tcp == "") || *clients < 1 {
		fmt.Fprintln(os.Stderr, "sockload: one of -socket or -tcp is required and -clients must be at least 1")
		os.Exit(2)
	}
	r, err := agenttest.RunLoadTarget(t, *clients, *d, *n)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sockload:", err)
		os.Exit(1)
	}
	json.NewEncoder(os.Stdout).Encode(r)
}
