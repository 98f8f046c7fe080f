//go:build !cgo

package main

// pkcs11Support is shown by `tether version`: a CGO_ENABLED=0 build cannot
// dlopen a PKCS#11 module, so it takes PEM keys only.
const pkcs11Support = "no (static build: PEM keys only; use tether-pkcs11-linux-* for pkcs11: keys)"
