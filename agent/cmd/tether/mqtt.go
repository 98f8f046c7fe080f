package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"

	"github.com/tetherd/tether/agent"
	"github.com/tetherd/tether/mqtt"
)

const mqttUsage = `usage:
  tether mqtt publish --topic T [--qos 0|1] [--message TEXT | payload on stdin] [--socket PATH]
  tether mqtt subscribe --topic FILTER [--count N] [--socket PATH]
        prints one JSON object per message: {"topic","payload"(base64),"qos","properties"}
`

// runMQTT implements `tether mqtt publish|subscribe` against the running
// agent's Unix socket: the agent owns the one MQTT session of the device.
func runMQTT(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, mqttUsage)
		return exitUsage
	}
	switch args[0] {
	case "publish":
		return mqttPublish(ctx, args[1:], os.Stdin, stdout, stderr)
	case "subscribe":
		return mqttSubscribe(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, mqttUsage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "tether mqtt: unknown command %q\n%s", args[0], mqttUsage)
		return exitUsage
	}
}

func mqttPublish(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := newFlagSet("mqtt publish", stderr)
	socket := fs.String("socket", defaultSocket, "the agent's Unix socket `path`")
	topic := fs.String("topic", "", "the `topic` to publish to")
	qos := fs.Uint("qos", 1, "QoS `0|1`")
	message := fs.String("message", "", "the payload `text`; without it the payload is read from stdin")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "tether mqtt publish: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	var payload []byte
	if isFlagSet(fs.Visit, "message") {
		payload = []byte(*message)
	} else {
		b, err := io.ReadAll(io.LimitReader(stdin, mqtt.MaxPayloadBytes+1))
		if err != nil {
			fmt.Fprintf(stderr, "tether mqtt publish: read stdin: %v\n", err)
			return exitRuntime
		}
		payload = b
	}
	// Check locally first: a usage error should not need the agent.
	if err := mqtt.ValidatePublish(*topic, payload, byte(min(*qos, 255))); err != nil {
		fmt.Fprintf(stderr, "tether mqtt publish: %v\n", err)
		return exitUsage
	}
	q := url.Values{"topic": {*topic}, "qos": {strconv.FormatUint(uint64(*qos), 10)}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://tether/v1/mqtt/publish?"+q.Encode(), bytes.NewReader(payload))
	if err != nil {
		fmt.Fprintf(stderr, "tether mqtt publish: %v\n", err)
		return exitRuntime
	}
	resp, err := agent.SocketClient(*socket).Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "tether mqtt publish: agent socket %s: %v: is `tether run` running? (--socket sets the path)\n", *socket, err)
		return exitRuntime
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusAccepted {
		fmt.Fprintf(stderr, "tether mqtt publish: %s\n", describeHTTPError(resp.StatusCode, body))
		if resp.StatusCode == http.StatusBadRequest {
			return exitUsage
		}
		return exitRuntime
	}
	fmt.Fprintf(stdout, "%s", body)
	return exitOK
}

func mqttSubscribe(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("mqtt subscribe", stderr)
	socket := fs.String("socket", defaultSocket, "the agent's Unix socket `path`")
	topic := fs.String("topic", "", "the topic `filter` (+ and # allowed)")
	count := fs.Int("count", 0, "exit after `N` messages (0: run until interrupted)")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "tether mqtt subscribe: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	if err := mqtt.ValidateFilter(*topic); err != nil {
		fmt.Fprintf(stderr, "tether mqtt subscribe: %v\n", err)
		return exitUsage
	}
	if *count < 0 {
		fmt.Fprintln(stderr, "tether mqtt subscribe: --count must be 0 or more")
		return exitUsage
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://tether/v1/mqtt/subscribe?"+url.Values{"topic": {*topic}}.Encode(), nil)
	if err != nil {
		fmt.Fprintf(stderr, "tether mqtt subscribe: %v\n", err)
		return exitRuntime
	}
	resp, err := agent.SocketClient(*socket).Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "tether mqtt subscribe: agent socket %s: %v: is `tether run` running? (--socket sets the path)\n", *socket, err)
		return exitRuntime
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		fmt.Fprintf(stderr, "tether mqtt subscribe: %s\n", describeHTTPError(resp.StatusCode, body))
		return exitRuntime
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 4*mqtt.MaxPayloadBytes)
	n := 0
	for sc.Scan() {
		if _, err := fmt.Fprintf(stdout, "%s\n", sc.Bytes()); err != nil {
			return exitRuntime
		}
		n++
		if *count > 0 && n >= *count {
			return exitOK
		}
	}
	if ctx.Err() != nil {
		return exitOK // interrupted
	}
	if err := sc.Err(); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintf(stderr, "tether mqtt subscribe: stream from agent ended: %v\n", err)
		return exitRuntime
	}
	fmt.Fprintln(stderr, "tether mqtt subscribe: the agent closed the stream (shutting down?)")
	return exitRuntime
}

func isFlagSet(visit func(func(*flag.Flag)), name string) bool {
	found := false
	visit(func(f *flag.Flag) {
		if f.Name == name {
			found = true
		}
	})
	return found
}

func describeHTTPError(status int, body []byte) string {
	var e struct{ Code, Message string }
	if json.Unmarshal(body, &e) == nil && e.Message != "" {
		return fmt.Sprintf("%s (%s, HTTP %d)", e.Message, e.Code, status)
	}
	return fmt.Sprintf("agent answered HTTP %d: %s", status, bytes.TrimSpace(body))
}
