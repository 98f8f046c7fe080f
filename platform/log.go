package platform

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// NewLogger returns a text logger writing to w at the given level. When w is
// the stream journald attached to the service (JOURNAL_STREAM names its
// device and inode), every line starts with an sd-daemon priority prefix
// ("<3>" error, "<4>" warning, "<6>" info, "<7>" debug) so journalctl -p
// filters work, and the timestamp is left to journald. Otherwise lines are
// plain slog text with a time.
func NewLogger(w io.Writer, level slog.Leveler) *slog.Logger {
	if f, ok := w.(*os.File); ok && IsJournalStream(f) {
		return slog.New(NewJournalHandler(w, level))
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// IsJournalStream reports whether f is the stream journald connected to this
// service, comparing f's device and inode with JOURNAL_STREAM.
func IsJournalStream(f *os.File) bool {
	env := os.Getenv("JOURNAL_STREAM")
	devS, inoS, ok := strings.Cut(env, ":")
	if !ok {
		return false
	}
	dev, err1 := strconv.ParseUint(devS, 10, 64)
	ino, err2 := strconv.ParseUint(inoS, 10, 64)
	if err1 != nil || err2 != nil {
		return false
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return uint64(st.Dev) == dev && uint64(st.Ino) == ino
}

// Priority returns the sd-daemon syslog priority for a slog level.
func Priority(l slog.Level) int {
	switch {
	case l >= slog.LevelError:
		return 3 // LOG_ERR
	case l >= slog.LevelWarn:
		return 4 // LOG_WARNING
	case l > slog.LevelInfo:
		return 5 // LOG_NOTICE
	case l == slog.LevelInfo:
		return 6 // LOG_INFO
	default:
		return 7 // LOG_DEBUG
	}
}

// NewJournalHandler returns a slog text handler whose lines carry the
// sd-daemon priority prefix and no time attribute (journald stamps lines).
func NewJournalHandler(w io.Writer, level slog.Leveler) slog.Handler {
	st := &journalState{w: w}
	inner := slog.NewTextHandler(prefixWriter{st}, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	})
	return &journalHandler{inner: inner, st: st}
}

// journalState is shared by a handler and those derived from it with
// WithAttrs/WithGroup: the priority of the record being written travels from
// Handle to the writer under mu, so each line is one Write with its prefix.
type journalState struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string
}

type prefixWriter struct{ st *journalState }

// Write is called by the TextHandler once per record, with st.mu held by
// journalHandler.Handle.
func (p prefixWriter) Write(b []byte) (int, error) {
	line := make([]byte, 0, len(p.st.prefix)+len(b))
	line = append(append(line, p.st.prefix...), b...)
	if _, err := p.st.w.Write(line); err != nil {
		return 0, err
	}
	return len(b), nil
}

type journalHandler struct {
	inner slog.Handler
	st    *journalState
}

func (h *journalHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

func (h *journalHandler) Handle(ctx context.Context, r slog.Record) error {
	h.st.mu.Lock()
	defer h.st.mu.Unlock()
	h.st.prefix = "<" + strconv.Itoa(Priority(r.Level)) + ">"
	return h.inner.Handle(ctx, r)
}

func (h *journalHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &journalHandler{inner: h.inner.WithAttrs(attrs), st: h.st}
}

func (h *journalHandler) WithGroup(name string) slog.Handler {
	return &journalHandler{inner: h.inner.WithGroup(name), st: h.st}
}
