// Command sockload is the load generator of `make bench`: keep-alive HTTP/1.1
// clients on a Unix socket, run as a process of its own so that the server
// under test and the baseline it is compared with get the same client. It
// prints one JSON line: requests, rps, p50 and p99 (nanoseconds).
//
//	sockload -socket /run/tether/tether.sock -path /v1/credentials -clients 8 -duration 2s
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/tetherd/tether/agent/agenttest"
)

func main() {
	socket := flag.String("socket", "", "the Unix socket")
	path := flag.String("path", "/v1/credentials", "the path to GET")
	clients := flag.Int("clients", 8, "concurrent connections")
	d := flag.Duration("duration", 2*time.Second, "how long to run")
	n := flag.Int("n", 0, "stop after this many requests (0: no limit)")
	flag.Parse()
	if *socket == "" || *clients < 1 {
		fmt.Fprintln(os.Stderr, "sockload: -socket is required and -clients must be at least 1")
		os.Exit(2)
	}
	r, err := agenttest.RunLoad(*socket, *path, *clients, *d, *n)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sockload:", err)
		os.Exit(1)
	}
	json.NewEncoder(os.Stdout).Encode(r)
}
