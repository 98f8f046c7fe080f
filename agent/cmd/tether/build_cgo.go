//go:build cgo

package main

// pkcs11Support is shown by `tether version`: this build can load PKCS#11 modules.
const pkcs11Support = "yes"
