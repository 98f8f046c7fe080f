package agent

import (
	"context"
	"log/slog"
	"time"

	"github.com/tetherd/tether/platform"
)

// trimAfter are the moments after READY=1 at which the agent hands back the
// memory start-up used: at once, and when the MQTT session and the first
// background work have settled.
var trimAfter = []time.Duration{0, 15 * time.Second}

// trimResident runs platform.TrimResident at trimAfter, until ctx ends.
func trimResident(ctx context.Context, log *slog.Logger) {
	var waited time.Duration
	for _, d := range trimAfter {
		select {
		case <-ctx.Done():
			return
		case <-time.After(d - waited):
		}
		waited = d
		if n, err := platform.TrimResident(); err != nil {
			log.Debug("could not trim resident memory", "err", err)
		} else {
			log.Debug("trimmed resident memory", "executable_bytes", n)
		}
	}
}
