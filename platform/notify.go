package platform

import (
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Notify sends one sd_notify message made of the given assignments (e.g.
// "READY=1", "STATUS=..."). sent is false, with a nil error, when the process
// was not started with NOTIFY_SOCKET, i.e. not by systemd as Type=notify.
//
// The write gives up after notifyTimeout: $NOTIFY_SOCKET is a datagram
// socket, and once its queue is full (net.unix.max_dgram_qlen, 10 messages
// by default) a sender blocks until the reader catches up. A service manager
// (or a test harness) that stops reading must not stop the agent: it would
// otherwise hang in a status line, deaf to SIGTERM.
func Notify(assignments ...string) (sent bool, err error) {
	name := os.Getenv("NOTIFY_SOCKET")
	if name == "" {
		return false, nil
	}
	fail := func(err error) (bool, error) {
		return false, fmt.Errorf("systemd notify %s: %w", strings.Join(keys(assignments), ","), err)
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		return fail(err)
	}
	defer conn.Close()
	if err := conn.SetWriteDeadline(time.Now().Add(notifyTimeout)); err != nil {
		return fail(err)
	}
	if _, err := conn.Write([]byte(strings.Join(assignments, "\n"))); err != nil {
		return fail(err)
	}
	return true, nil
}

// notifyTimeout bounds one sd_notify write (see Notify).
const notifyTimeout = time.Second

// keys names the assignments for an error without repeating their values.
func keys(assignments []string) []string {
	out := make([]string, 0, len(assignments))
	for _, a := range assignments {
		k, _, _ := strings.Cut(a, "=")
		out = append(out, k)
	}
	return out
}

// Ready tells systemd that start-up or a reload has finished. A STATUS line
// is sent with it when status is not empty.
func Ready(status string) error {
	a := []string{daemon.SdNotifyReady}
	if status != "" {
		a = append(a, statusAssignment(status))
	}
	_, err := Notify(a...)
	return err
}

// Status sets the free-form status `systemctl status` shows.
func Status(status string) error {
	_, err := Notify(statusAssignment(status))
	return err
}

// statusAssignment keeps the text on one line: a newline would start a new
// assignment that systemd would interpret.
func statusAssignment(status string) string {
	return "STATUS=" + strings.NewReplacer("\n", " ", "\r", " ").Replace(status)
}

// Stopping tells systemd that shutdown has begun.
func Stopping() error {
	_, err := Notify(daemon.SdNotifyStopping)
	return err
}

// Reloading tells systemd that a configuration reload has begun; call Ready
// when it is done. The message carries MONOTONIC_USEC, which Type=notify-reload
// (systemd 253 and later) requires to match the reload to the request, and
// which older versions ignore, so one message serves both unit types.
func Reloading() error {
	a := []string{daemon.SdNotifyReloading}
	if mono := strings.TrimSpace(daemon.SdNotifyMonotonicUsec()); mono != "" {
		a = append(a, mono)
	}
	_, err := Notify(a...)
	return err
}
