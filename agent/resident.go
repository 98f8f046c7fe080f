package agent

import (
	"context"
	"log/slog"
	"os"
	"syscall"
	"time"

	"github.com/tetherd/tether/platform"
)

// trimAfter are the moments after READY=1 at which the agent hands back the
// memory start-up used: at once, and when the MQTT session and the first
// background work have settled.
var trimAfter = []time.Duration{0, 15 * time.Second}

// After start-up, the agent trims again whenever it has gone quiet after
// work that brought pages back (a burst of requests, a refresh, a
// reconnect): it looks every idleTrimPeriod, and trims when the last period
// used less than idleCPU of CPU time and more than idleTrimFaults pages
// were faulted in since the last trim. At idle this costs one getrusage a
// period; a trim costs a GC and a madvise, and the pages the next work
// touches fault back in once (docs/footprint.md).
const (
	idleTrimPeriod = 30 * time.Second
	idleCPU        = 100 * time.Millisecond
	idleTrimFaults = 512 // 2 MiB of 4 KiB pages: more than idle keep-alives bring back
)

// usage is what the idle rule reads of the process's resource usage.
type usage struct {
	cpu    time.Duration // user + system
	faults int64         // minor + major page faults
}

func readUsage() (usage, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return usage{}, err
	}
	return usage{
		cpu:    time.Duration(ru.Utime.Nano() + ru.Stime.Nano()),
		faults: int64(ru.Minflt) + int64(ru.Majflt),
	}, nil
}

// idleTrimDue reports whether to trim now: the period from prev to now was
// quiet and pages came back since lastTrim.
func idleTrimDue(lastTrim, prev, now usage) bool {
	return now.cpu-prev.cpu < idleCPU && now.faults-lastTrim.faults > idleTrimFaults
}

// trimEnabled is false when TETHER_TRIM=off, which `make bench` uses to
// measure what the trim saves.
func trimEnabled() bool { return os.Getenv("TETHER_TRIM") != "off" }

// trimResident runs platform.TrimResident at trimAfter and then, looking
// every idleTrimPeriod, whenever idleTrimDue, until ctx ends.
func trimResident(ctx context.Context, log *slog.Logger) {
	trimResidentEvery(ctx, log, trimAfter, idleTrimPeriod)
}

// trimResidentEvery is trimResident with its schedule as arguments.
func trimResidentEvery(ctx context.Context, log *slog.Logger, after []time.Duration, period time.Duration) {
	if !trimEnabled() {
		return
	}
	trim := func() usage {
		if n, err := platform.TrimResident(); err != nil {
			log.Debug("could not trim resident memory", "err", err)
		} else {
			log.Debug("trimmed resident memory", "executable_bytes", n)
		}
		u, _ := readUsage()
		return u
	}
	sleep := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		}
	}
	var waited time.Duration
	var last usage
	for _, d := range after {
		if !sleep(d - waited) {
			return
		}
		waited = d
		last = trim()
	}
	prev := last
	for sleep(period) {
		now, err := readUsage()
		if err != nil {
			log.Debug("could not read resource usage; no more idle trims", "err", err)
			return
		}
		if idleTrimDue(last, prev, now) {
			last = trim()
			now = last
		}
		prev = now
	}
}
