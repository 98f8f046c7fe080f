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
// It needs cgo (the PKCS#11 build); with CGO_ENABLED=0 the package is empty.
package hsmtest
