//go:build cgo

package hsm_test

import (
	"testing"

	"github.com/tetherd/tether/hsm"
	"github.com/tetherd/tether/hsm/hsmtest"
)

// backends of the cgo build: the module in-process (crypto11), then
// through p11-kit.
func backends() []backend {
	inProcess := backend{"in-process",
		func(_ *testing.T, tk *hsmtest.Token, o string) string { return tk.URI(o) },
		func(t *testing.T, tk *hsmtest.Token, _ *hsm.Key) { tk.CloseAllSessions(t) }}
	return append([]backend{inProcess}, rpcBackends...)
}

// remoteURI asks for `p11-kit remote` explicitly: the cgo build would load
// the module in-process otherwise.
func remoteURI(tk *hsmtest.Token, object string) string { return tk.RemoteURI(object) }
