package credprovider

// SetJoinHook lets tests observe callers starting to wait for a shared fetch.
func SetJoinHook(r *Refresher, f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.joinHook = f
}
