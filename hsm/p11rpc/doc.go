// Package p11rpc is a client for p11-kit's RPC protocol, the "Simple PKCS #11
// RPC Protocol" (draft-ueno-pkcs11-rpc) that `p11-kit remote MODULE` speaks on
// its standard input and output and `p11-kit server` offers on a Unix socket.
// It lets a program built without cgo use a PKCS#11 module that another
// process has loaded.
//
// The client implements the calls a TLS client identity needs: initialise,
// slots and tokens, sessions, login, object search, attributes, signing,
// key generation and encryption. Calls on one Client are serialised, because
// the protocol is one request and one response at a time over one stream;
// open several Clients for parallelism.
//
// Messages are bounded (MaxMessage), every call has a deadline (a Client's
// CallTimeout), and a transport failure leaves the Client broken: every later
// call returns an error wrapping ErrTransport, and the caller dials again.
// PKCS#11 failures are Error values, the CKR_ code the module returned.
//
// Protocol versions 0 to 2 are negotiated: p11-kit 0.24 (Debian 12) speaks
// version 0; 0.25.6 and later speak version 2, which changed how mechanisms
// are encoded. Both encodings are implemented.
package p11rpc
