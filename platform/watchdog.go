package platform

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// WatchdogInterval returns the WatchdogSec= systemd set for this process
// (from WATCHDOG_USEC, when WATCHDOG_PID is unset or names this process), or
// zero when the watchdog is off.
func WatchdogInterval() (time.Duration, error) {
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		return 0, fmt.Errorf("systemd watchdog: %w: check WatchdogSec= in the unit", err)
	}
	return d, nil
}

// Watchdog pings systemd's watchdog only while the agent is healthy, so a
// wedged agent is restarted by systemd instead of lingering as a process that
// is alive but serves nothing.
type Watchdog struct {
	interval time.Duration
	healthy  func(context.Context) error
	log      *slog.Logger
	failing  bool
}

// NewWatchdog returns a watchdog for the given WatchdogSec interval. healthy
// is asked before every ping; a non-nil error withholds the ping. A nil
// logger discards the transition lines.
func NewWatchdog(interval time.Duration, healthy func(context.Context) error, log *slog.Logger) *Watchdog {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Watchdog{interval: interval, healthy: healthy, log: log}
}

// Beat runs one health check and pings the watchdog when it passes. It
// returns the health error (no ping was sent) or the notify error. Beat is
// not safe for concurrent use; Run calls it from one goroutine.
func (w *Watchdog) Beat(ctx context.Context) error {
	if err := w.healthy(ctx); err != nil {
		if !w.failing {
			w.log.Warn("unhealthy: withholding watchdog ping; systemd restarts tether if this lasts WatchdogSec", "err", err, "watchdog_sec", w.interval)
		}
		w.failing = true
		return fmt.Errorf("watchdog ping withheld: %w", err)
	}
	if w.failing {
		w.log.Info("healthy again: watchdog pings resumed")
	}
	w.failing = false
	_, err := Notify(daemon.SdNotifyWatchdog)
	return err
}

// Run beats every half interval, as sd_watchdog_enabled(3) advises, until ctx
// is done. It returns at once when the interval is zero (watchdog off).
func (w *Watchdog) Run(ctx context.Context) error {
	if w.interval <= 0 {
		return nil
	}
	t := time.NewTicker(w.interval / 2)
	defer t.Stop()
	for {
		_ = w.Beat(ctx) // Beat logs transitions; a missed ping is the signal
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
