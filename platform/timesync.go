package platform

import (
	"os"

	"golang.org/x/sys/unix"
)

// TimeSync is what the kernel and systemd-timesyncd say about the clock's
// synchronisation.
type TimeSync struct {
	// Synchronised is the kernel's view (adjtimex: STA_UNSYNC clear), which
	// every NTP daemon (chrony, ntpd, systemd-timesyncd, busybox ntpd)
	// maintains; it needs no systemd.
	Synchronised bool
	// Timesyncd is set when systemd-timesyncd has marked the clock
	// synchronised (/run/systemd/timesync/synchronized), a hint only.
	Timesyncd bool
	// MaxError is the kernel's estimate of the clock's error, in
	// microseconds, when synchronised.
	MaxError int64
}

// timesyncdFlag is the file systemd-timesyncd creates once it has set the
// clock.
const timesyncdFlag = "/run/systemd/timesync/synchronized"

// ReadTimeSync asks the kernel (adjtimex, read-only) whether the clock is
// synchronised.
func ReadTimeSync() (TimeSync, error) {
	var tx unix.Timex // Modes 0: read only
	state, err := unix.Adjtimex(&tx)
	if err != nil {
		return TimeSync{}, err
	}
	ts := TimeSync{Synchronised: state != unix.TIME_ERROR && tx.Status&unix.STA_UNSYNC == 0}
	if ts.Synchronised {
		ts.MaxError = int64(tx.Maxerror)
	}
	if _, err := os.Stat(timesyncdFlag); err == nil {
		ts.Timesyncd = true
	}
	return ts, nil
}
