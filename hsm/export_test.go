package hsm

import (
	"errors"

	"github.com/tetherd/tether/hsm/p11rpc"
)

// withP11Kit runs f on k's open p11-kit connection.
func withP11Kit(k *Key, f func(c *p11rpc.Client, slot uint) error) error {
	rk, ok := k.backend.(*rpcKey)
	if !ok {
		return errors.New("not a key reached through p11-kit")
	}
	rk.mu.Lock()
	defer rk.mu.Unlock()
	if rk.s == nil {
		return errors.New("the key has no open connection")
	}
	return f(rk.s.c, rk.s.tok.slot)
}

// CloseP11KitSessions closes every session of k's p11-kit connection on its
// token (C_CloseAllSessions inside the key's own p11-kit process): what a
// token reset does to a running agent. It is the p11-kit backend's
// counterpart of hsmtest's CloseAllSessions, which reaches only modules
// loaded in the test process.
func CloseP11KitSessions(k *Key) error {
	return withP11Kit(k, func(c *p11rpc.Client, slot uint) error { return c.CloseAllSessions(slot) })
}

// DropP11KitConnection closes k's connection to p11-kit under it: what the
// p11-kit process exiting, or a p11-kit server restarting, does.
func DropP11KitConnection(k *Key) error {
	return withP11Kit(k, func(c *p11rpc.Client, _ uint) error { return c.Close() })
}
