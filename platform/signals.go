package platform

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// HandleSignals returns a context that is cancelled on SIGTERM or SIGINT
// (context.Cause names the signal) and a channel that receives once per
// SIGHUP (systemctl reload); SIGHUPs that arrive while one is pending are
// merged into it. stop restores default signal handling; call it as soon as
// ctx is done, so that a second SIGTERM or Ctrl-C ends a shutdown that hangs.
func HandleSignals(parent context.Context) (ctx context.Context, reload <-chan struct{}, stop func()) {
	ctx, cancel := context.WithCancelCause(parent)
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	rl := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case s := <-sigs:
				if s == syscall.SIGHUP {
					select {
					case rl <- struct{}{}:
					default:
					}
					continue
				}
				cancel(fmt.Errorf("received %v", s))
			}
		}
	}()
	var once sync.Once
	return ctx, rl, func() {
		once.Do(func() {
			signal.Stop(sigs)
			close(done)
			cancel(context.Canceled)
		})
	}
}
