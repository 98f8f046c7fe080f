package store

// FailBeforeLogReset makes o's drains stop, as a crash would, between
// their bbolt transaction and the log's reset, with the error f returns.
func (o *Outbox) FailBeforeLogReset(f func() error) {
	o.wmu.Lock()
	o.failBeforeReset = f
	o.wmu.Unlock()
}

// Drain moves the outbox log into bbolt now, as the committer does when
// the log is full or idle.
func (o *Outbox) Drain() error {
	o.wmu.Lock()
	defer o.wmu.Unlock()
	if o.wal == nil {
		return nil
	}
	return o.drainLocked()
}
