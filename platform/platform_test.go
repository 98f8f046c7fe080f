package platform

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestMain doubles as the socket-activated child: systemd-socket-activate
// execs this test binary with LISTEN_FDS set, and the child reports what
// ActivatedListener found.
func TestMain(m *testing.M) {
	if name := os.Getenv("TETHER_ACTIVATION_CHILD"); name != "" {
		os.Exit(activationChild(name))
	}
	os.Exit(m.Run())
}

func activationChild(name string) int {
	l, err := ActivatedListener(name)
	if err != nil {
		fmt.Println("error:", err)
		return 0
	}
	if l == nil {
		fmt.Println("error: not activated")
		return 0
	}
	defer l.Close()
	fmt.Printf("listener network=%s addr=%s env_cleared=%t\n", l.Addr().Network(), l.Addr(), os.Getenv("LISTEN_FDS") == "")
	c, err := l.Accept()
	if err != nil {
		fmt.Println("error: accept:", err)
		return 0
	}
	defer c.Close()
	_, _ = fmt.Fprintf(c, "hello from pid %d\n", os.Getpid())
	return 0
}

// notifySocket opens a real unixgram socket, as systemd does, and points
// NOTIFY_SOCKET at it. abstract selects a Linux abstract-namespace address
// ("@..."), which systemd also uses.
func notifySocket(t *testing.T, abstract bool) *net.UnixConn {
	t.Helper()
	// sun_path is 108 bytes; t.TempDir can be longer.
	dir, err := os.MkdirTemp("", "tn")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	name := filepath.Join(dir, "notify")
	if abstract {
		name = "@tether-test-" + strconv.Itoa(os.Getpid()) + "-" + filepath.Base(dir)
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	t.Setenv("NOTIFY_SOCKET", name)
	return conn
}

// recv reads one datagram. The deadline only bounds a broken test; every
// datagram read here has already been sent synchronously.
func recv(t *testing.T, conn *net.UnixConn) string {
	t.Helper()
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(10*time.Second)))
	buf := make([]byte, 4096)
	n, err := conn.Read(buf)
	require.NoError(t, err)
	return string(buf[:n])
}

// TestNotify ensures that Notify sends the assignments to $NOTIFY_SOCKET.
func TestNotify(t *testing.T) {
	cases := []struct {
		name string
		send func() error
		want *regexp.Regexp
	}{
		{"ready", func() error { return Ready("") }, regexp.MustCompile(`^READY=1$`)},
		{"ready with status", func() error { return Ready("serving 2 roles") }, regexp.MustCompile(`^READY=1\nSTATUS=serving 2 roles$`)},
		{"status", func() error { return Status("refreshing device role") }, regexp.MustCompile(`^STATUS=refreshing device role$`)},
		{"status newline cannot inject an assignment", func() error { return Status("x\nREADY=1") }, regexp.MustCompile(`^STATUS=x READY=1$`)},
		{"stopping", Stopping, regexp.MustCompile(`^STOPPING=1$`)},
		{"reloading carries MONOTONIC_USEC", Reloading, regexp.MustCompile(`^RELOADING=1\nMONOTONIC_USEC=[1-9][0-9]*$`)},
	}
	for _, abstract := range []bool{false, true} {
		for _, tc := range cases {
			t.Run(fmt.Sprintf("%s/abstract=%t", tc.name, abstract), func(t *testing.T) {
				conn := notifySocket(t, abstract)
				require.NoError(t, tc.send())
				assert.Regexp(t, tc.want, recv(t, conn))
			})
		}
	}
}

// TestNotifyOutsideSystemd ensures that Notify does nothing, without an error, outside systemd.
func TestNotifyOutsideSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	sent, err := Notify("READY=1")
	require.NoError(t, err)
	assert.False(t, sent)
	require.NoError(t, Ready("x"))
}

// TestNotifyDeadSocketIsAnError ensures that a $NOTIFY_SOCKET nobody listens on is reported.
func TestNotifyDeadSocketIsAnError(t *testing.T) {
	dir, err := os.MkdirTemp("", "tn")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	t.Setenv("NOTIFY_SOCKET", filepath.Join(dir, "gone"))
	err = Stopping()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "STOPPING")
}

// TestNotifyNeverBlocks ensures that a $NOTIFY_SOCKET whose reader stopped
// reading cannot hang the caller: once the socket's queue is full, Notify
// returns an error instead of waiting for the reader.
func TestNotifyNeverBlocks(t *testing.T) {
	notifySocket(t, false) // never read
	for i := range 1024 {
		if err := Status("line " + strconv.Itoa(i)); err != nil {
			assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
			assert.Contains(t, err.Error(), "STATUS")
			return
		}
	}
	t.Fatal("1024 messages were queued on a socket nobody reads; the queue limit was not reached")
}

// TestWatchdogInterval ensures that WatchdogInterval reads $WATCHDOG_USEC when $WATCHDOG_PID is this process or unset, and refuses garbage.
func TestWatchdogInterval(t *testing.T) {
	pid := strconv.Itoa(os.Getpid())
	cases := []struct {
		name, usec, pid string
		want            time.Duration
		wantErr         string
	}{
		{"off", "", "", 0, ""},
		{"on for this pid", "30000000", pid, 30 * time.Second, ""},
		{"on without pid", "5000000", "", 5 * time.Second, ""},
		{"meant for another pid", "30000000", "1", 0, ""},
		{"garbage", "soon", pid, 0, "WatchdogSec"},
		{"zero", "0", pid, 0, "WatchdogSec"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("WATCHDOG_USEC", tc.usec)
			t.Setenv("WATCHDOG_PID", tc.pid)
			got, err := WatchdogInterval()
			if tc.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

// TestWatchdogPingsOnlyWhileHealthy ensures that the watchdog pings only while the health check passes.
func TestWatchdogPingsOnlyWhileHealthy(t *testing.T) {
	conn := notifySocket(t, false)
	log, buf := captureLogger()
	var health error
	w := NewWatchdog(time.Minute, func(context.Context) error { return health }, log)
	ctx := t.Context()

	steps := []struct {
		health   error
		wantPing bool
	}{
		{nil, true},
		{errors.New("no valid credentials for role device"), false},
		{errors.New("no valid credentials for role device"), false},
		{nil, true},
	}
	for i, s := range steps {
		health = s.health
		err := w.Beat(ctx)
		// A marker after every beat shows whether the beat sent anything:
		// datagrams on one socket arrive in order.
		_, nerr := Notify("X_MARKER=" + strconv.Itoa(i))
		require.NoError(t, nerr)
		if s.wantPing {
			require.NoError(t, err)
			assert.Equal(t, "WATCHDOG=1", recv(t, conn), "step %d", i)
		} else {
			require.ErrorIs(t, err, s.health)
		}
		assert.Equal(t, "X_MARKER="+strconv.Itoa(i), recv(t, conn), "step %d", i)
	}
	// One line per transition, not one per beat.
	assert.Equal(t, 1, strings.Count(buf.String(), "withholding watchdog ping"))
	assert.Equal(t, 1, strings.Count(buf.String(), "pings resumed"))
}

// TestWatchdogRun ensures that Run pings repeatedly until its context ends, and returns at once when the watchdog is off.
func TestWatchdogRun(t *testing.T) {
	conn := notifySocket(t, false)
	w := NewWatchdog(2*time.Millisecond, func(context.Context) error { return nil }, nil)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	for range 3 {
		assert.Equal(t, "WATCHDOG=1", recv(t, conn))
	}
	cancel()
	require.NoError(t, <-done)

	require.NoError(t, NewWatchdog(0, nil, nil).Run(t.Context()), "watchdog off returns at once")
}

func captureLogger() (*slog.Logger, *bytes.Buffer) {
	buf := &bytes.Buffer{}
	return slog.New(slog.NewTextHandler(buf, nil)), buf
}

// activate runs this test binary under systemd's own socket-activation tool,
// connects to the socket once the tool listens (that connection triggers the
// spawn), and returns the child's report line and what it wrote on the
// connection.
func activate(t *testing.T, fdname, want string) (report, greeting string) {
	t.Helper()
	tool, err := exec.LookPath("systemd-socket-activate")
	require.NoError(t, err, "systemd-socket-activate is missing: apt-get install systemd")
	dir, err := os.MkdirTemp("", "ta")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	sock := filepath.Join(dir, "tether.sock")

	cmd := exec.Command(tool, "-l", sock, "--fdname="+fdname, "-E", "TETHER_ACTIVATION_CHILD="+want,
		os.Args[0], "-test.run=^$")
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})

	// The tool says "Listening on ..." once the socket is bound.
	errLines := bufio.NewScanner(stderr)
	for errLines.Scan() && !strings.Contains(errLines.Text(), "Listening on") {
	}
	go func() { _, _ = io.Copy(io.Discard, stderr) }()

	c, err := net.Dial("unix", sock)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })

	out := bufio.NewReader(stdout)
	report, err = out.ReadString('\n')
	require.NoError(t, err)
	if strings.HasPrefix(report, "listener") {
		greeting, err = bufio.NewReader(c).ReadString('\n')
		require.NoError(t, err)
	}
	return strings.TrimSpace(report), strings.TrimSpace(greeting)
}

// TestSocketActivation ensures that an activated socket named api is taken from systemd.
func TestSocketActivation(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns systemd-socket-activate")
	}
	t.Run("named descriptor", func(t *testing.T) {
		report, greeting := activate(t, "api", "api")
		assert.Regexp(t, `^listener network=unix addr=/.*/tether.sock env_cleared=true$`, report)
		assert.Regexp(t, `^hello from pid [0-9]+$`, greeting)
	})
	t.Run("wrong FileDescriptorName", func(t *testing.T) {
		report, _ := activate(t, "metrics", "api")
		assert.Contains(t, report, `none named "api"`)
		assert.Contains(t, report, "metrics")
		assert.Contains(t, report, "FileDescriptorName=api")
	})
}

// TestNotActivated ensures that without $LISTEN_FDS there is no activated socket and no error.
func TestNotActivated(t *testing.T) {
	cases := []struct{ name, pid, fds string }{
		{"no variables", "", ""},
		{"meant for another process", "1", "1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("LISTEN_PID", tc.pid)
			t.Setenv("LISTEN_FDS", tc.fds)
			l, err := ActivatedListener("api")
			require.NoError(t, err)
			assert.Nil(t, l)
		})
	}
}

// TestUnixListenerFallback ensures that UnixListener creates the socket with its mode, replaces a stale one and refuses a live one.
func TestUnixListenerFallback(t *testing.T) {
	t.Setenv("LISTEN_PID", "")
	t.Setenv("LISTEN_FDS", "")
	dir, err := os.MkdirTemp("", "tu")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	sock := filepath.Join(dir, "tether.sock")

	// A stale socket from a crashed run: bound, then its listener closed
	// without unlinking.
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	require.NoError(t, err)
	stale.SetUnlinkOnClose(false)
	require.NoError(t, stale.Close())

	l, activated, err := UnixListener("api", sock, 0o660)
	require.NoError(t, err)
	defer l.Close()
	assert.False(t, activated)
	fi, err := os.Stat(sock)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o660), fi.Mode().Perm())

	// While it serves, a second agent must not steal it.
	_, _, err = UnixListener("api", sock, 0o660)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "in use")

	plain := filepath.Join(dir, "plain")
	require.NoError(t, os.WriteFile(plain, nil, 0o600))
	_, _, err = UnixListener("api", plain, 0o660)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "not a socket")

	_, _, err = UnixListener("api", filepath.Join(dir, "missing", "s.sock"), 0o660)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "RuntimeDirectory")
}

// TestDirectories ensures that Directories follows the directories systemd makes for the unit (the first of several) and falls back to the FHS paths.
func TestDirectories(t *testing.T) {
	cases := []struct {
		name string
		env  map[string]string
		want Dirs
	}{
		{"outside systemd", nil, Dirs{State: DefaultStateDir, Runtime: DefaultRuntimeDir, Configuration: DefaultConfigDir}},
		{"systemd", map[string]string{
			"STATE_DIRECTORY": "/var/lib/tether", "RUNTIME_DIRECTORY": "/run/tether",
			"CONFIGURATION_DIRECTORY": "/etc/tether", "CREDENTIALS_DIRECTORY": "/run/credentials/tether.service",
		}, Dirs{State: "/var/lib/tether", Runtime: "/run/tether", Configuration: "/etc/tether", Credentials: "/run/credentials/tether.service"}},
		{"several directories: first wins", map[string]string{"STATE_DIRECTORY": "/var/lib/a:/var/lib/b"},
			Dirs{State: "/var/lib/a", Runtime: DefaultRuntimeDir, Configuration: DefaultConfigDir}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, DirectoriesFrom(func(k string) string { return tc.env[k] }))
		})
	}
}

// TestCredential ensures that Credential finds a systemd credential by its plain name in the credentials directory, and nothing outside it.
func TestCredential(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "pin"), []byte("1234"), 0o400))
	require.NoError(t, os.Mkdir(filepath.Join(dir, "sub"), 0o700))
	d := Dirs{Credentials: dir}
	cases := []struct {
		name   string
		dirs   Dirs
		cred   string
		wantOK bool
	}{
		{"present", d, "pin", true},
		{"absent", d, "other", false},
		{"path escape", d, "../pin", false},
		{"directory", d, "sub", false},
		{"no credentials directory", Dirs{}, "pin", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, ok := tc.dirs.Credential(tc.cred)
			assert.Equal(t, tc.wantOK, ok)
			if ok {
				assert.Equal(t, filepath.Join(dir, tc.cred), p)
			}
		})
	}
}

// journalFile makes f look like the stream journald attached, the way
// systemd announces it: JOURNAL_STREAM=<dev>:<ino> of stderr.
func journalFile(t *testing.T, f *os.File) {
	t.Helper()
	var st syscall.Stat_t
	require.NoError(t, syscall.Fstat(int(f.Fd()), &st))
	t.Setenv("JOURNAL_STREAM", fmt.Sprintf("%d:%d", st.Dev, st.Ino))
}

// TestLoggerJournalPrefixes ensures that on the journal stream every line starts with its syslog priority.
func TestLoggerJournalPrefixes(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	require.NoError(t, err)
	defer f.Close()
	journalFile(t, f)
	require.True(t, IsJournalStream(f))

	log := NewLogger(f, slog.LevelDebug).With("role", "device").WithGroup("g")
	log.Debug("d", "k", 1)
	log.Info("i")
	log.Log(t.Context(), slog.LevelInfo+2, "n")
	log.Warn("w")
	log.Error("e", "err", "multi\nline")

	data, err := os.ReadFile(f.Name())
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	want := []string{
		`<7>level=DEBUG msg=d role=device g.k=1`,
		`<6>level=INFO msg=i role=device`,
		`<5>level=INFO+2 msg=n role=device`,
		`<4>level=WARN msg=w role=device`,
		`<3>level=ERROR msg=e role=device g.err="multi\nline"`,
	}
	assert.Equal(t, want, lines)
}

// TestLoggerPlainOutsideJournal ensures that elsewhere the log is plain slog text.
func TestLoggerPlainOutsideJournal(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	require.NoError(t, err)
	defer f.Close()
	other, err := os.Create(filepath.Join(t.TempDir(), "other"))
	require.NoError(t, err)
	defer other.Close()

	cases := []struct {
		name string
		env  func(t *testing.T)
	}{
		{"no JOURNAL_STREAM", func(t *testing.T) { t.Setenv("JOURNAL_STREAM", "") }},
		{"JOURNAL_STREAM names another file (stderr redirected)", func(t *testing.T) { journalFile(t, other) }},
		{"garbage JOURNAL_STREAM", func(t *testing.T) { t.Setenv("JOURNAL_STREAM", "x:y") }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.env(t)
			require.NoError(t, f.Truncate(0))
			_, err := f.Seek(0, io.SeekStart)
			require.NoError(t, err)
			NewLogger(f, slog.LevelInfo).Info("hello")
			data, err := os.ReadFile(f.Name())
			require.NoError(t, err)
			assert.Regexp(t, `^time=\S+ level=INFO msg=hello\n$`, string(data))
		})
	}
}

// TestHandleSignals ensures that SIGTERM and SIGINT end the context with their cause and SIGHUP asks for a reload.
func TestHandleSignals(t *testing.T) {
	ctx, reload, stop := HandleSignals(t.Context())
	defer stop()

	require.NoError(t, syscall.Kill(os.Getpid(), syscall.SIGHUP))
	<-reload
	require.NoError(t, ctx.Err(), "SIGHUP reloads, it does not stop")

	require.NoError(t, syscall.Kill(os.Getpid(), syscall.SIGTERM))
	<-ctx.Done()
	assert.EqualError(t, context.Cause(ctx), "received terminated")
	stop()
	stop() // idempotent
}
