//go:build cgo && !nopkcs11

package hsm_test

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

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

// TestSealerSameInProcessAndThroughP11Kit ensures that the p11-kit sealer
// (AES-ECB blocks from the token, GCM in Go) is standard AES-GCM: what the
// in-process sealer (CKM_AES_GCM in the token) sealed opens through p11-kit
// with the same token key, and the other way round, so a gateway can move
// between the cgo and the static build without losing its stored state.
func TestSealerSameInProcessAndThroughP11Kit(t *testing.T) {
	skipShort(t)
	tk := hsmtest.NewToken(t, "compat")
	uri, _ := tk.GenerateKey(t, "device", hsm.KeyECP256)
	ctx := context.Background()
	open := func(uri string) hsm.Sealer {
		k, err := hsm.OpenKey(ctx, uri)
		require.NoError(t, err)
		t.Cleanup(func() { k.Close() })
		a, err := k.Sealer(ctx, "tether-store")
		require.NoError(t, err)
		return a
	}
	inProc, viaRPC := open(uri), open(tk.RemoteURI("device"))
	nonce := make([]byte, 12)
	for i, text := range []string{"", "x", "exactly sixteen!", strings.Repeat("credentials ", 300)} {
		nonce[0] = byte(i)
		ad := []byte("role/device")
		ct, err := inProc.Seal(nil, nonce, []byte(text), ad)
		require.NoError(t, err)
		pt, err := viaRPC.Open(nil, nonce, ct, ad)
		require.NoError(t, err, "in-process sealed, opened through p11-kit (%d bytes)", len(text))
		assert.Equal(t, text, string(pt))

		ct2, err := viaRPC.Seal(nil, nonce, []byte(text), ad)
		require.NoError(t, err)
		assert.Equal(t, ct, ct2, "the same key, nonce and text seal to the same bytes")
		pt, err = inProc.Open(nil, nonce, ct2, ad)
		require.NoError(t, err)
		assert.Equal(t, text, string(pt))

		ct2[len(ct2)-1] ^= 1
		_, err = viaRPC.Open(nil, nonce, ct2, ad)
		assert.Error(t, err, "a changed tag does not open")
	}
}
