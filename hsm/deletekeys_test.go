package hsm_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/hsm"
)

// TestDeleteKeys ensures that DeleteKeys destroys the key pairs with the
// URI's label except the one whose id is kept, and with an id exactly that
// pair, leaving other labels and the state sealer's secret key alone,
// through every backend of the build (the static build's p11-kit remote and
// server too): a committed rotation leaves one key in the token.
func TestDeleteKeys(t *testing.T) {
	skipShort(t)
	forEachBackend(t, func(t *testing.T, b backend) {
		tk, _, _, id := tokenIdentity(t, b, hsm.KeyECP256) // "device", with a certificate
		ctx := context.Background()
		_, err := id.Sealer(ctx, "tether-state")
		require.NoError(t, err)
		uri := b.uri(t, tk, "device")
		withID := func(hexID string) string {
			path, query, _ := strings.Cut(uri, "?")
			return path + ";id=" + hexID + "?" + query
		}
		_, err = hsm.GenerateKey(ctx, withID("%aa%01"), hsm.KeyECP256)
		require.NoError(t, err)
		_, err = hsm.GenerateKey(ctx, withID("%aa%02"), hsm.KeyECP256)
		require.NoError(t, err)
		generate(t, b, tk, "other", hsm.KeyECP256)
		objects := func() []string {
			slots, err := hsm.List(ctx, "", mustURI(t, uri))
			require.NoError(t, err)
			var out []string
			for _, s := range slots {
				if s.Token != nil && s.Token.Label == tk.Label {
					for _, o := range s.Token.Objects {
						if o.Class == "private" || o.Class == "public" || o.Class == "secret-key" {
							out = append(out, fmt.Sprintf("%s %s %x", o.Class, o.Label, o.ID))
						}
					}
				}
			}
			return out
		}
		require.Len(t, objects(), 9, "three device pairs, one other pair, the sealer")

		require.NoError(t, hsm.DeleteKeys(ctx, uri, []byte{0xaa, 0x02}))
		left := objects()
		assert.Len(t, left, 5, "%v", left)
		assert.Contains(t, left, "private device aa02")
		assert.Contains(t, left, "public device aa02")
		assert.Contains(t, strings.Join(left, "\n"), "secret-key tether-state")

		require.NoError(t, hsm.DeleteKeys(ctx, withID("%aa%02"), nil))
		left = objects()
		assert.Len(t, left, 3, "%v", left)
		assert.NotContains(t, strings.Join(left, "\n"), " device ")
		assert.Contains(t, strings.Join(left, "\n"), "secret-key tether-state")
		require.Error(t, hsm.DeleteKeys(ctx, strings.Replace(uri, ";object=device", "", 1), nil), "a URI naming no key deletes nothing")
	})
}
