//go:build !cgo || nopkcs11

package hsm_test

import "github.com/tetherd/tether/hsm/hsmtest"

// backends of the static build: p11-kit only.
func backends() []backend { return rpcBackends }

// remoteURI is the plain URI: the static build hosts module-path with
// `p11-kit remote` by default, which is what these tests check.
func remoteURI(tk *hsmtest.Token, object string) string { return tk.URI(object) }
