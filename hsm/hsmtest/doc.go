// Package hsmtest creates throw-away SoftHSM2 tokens for tests, in the style
// of net/http/httptest: each token lives in t.TempDir() with its own
// SOFTHSM2_CONF, has a random user PIN kept in a 0600 file, and disappears
// with the test.
//
// SoftHSM reads SOFTHSM2_CONF from the process environment when the module
// is initialised, so NewToken sets it with t.Setenv: tests that use it cannot
// call t.Parallel, and must close every hsm.Key and hsm.Identity they open
// (t.Cleanup) so the module is finalised before the next test's token.
//
// Tokens are made in-process in cgo builds and through `p11-kit remote`
// (hsm/p11rpc) in static ones; Token.RemoteURI and Token.ServerURI address
// the same token through p11-kit's RPC, hosted by `p11-kit remote` or by a
// `p11-kit server` that ServerURI starts for the test.
package hsmtest
