package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/tetherd/tether/hsm"
	"github.com/tetherd/tether/hsm/tpm"
)

const hsmUsage = `Usage:
  tether hsm list [--module PATH] [--key URI]
        slots, tokens and key labels/ids/types (never secrets); --key logs into
        that URI's token (pin-source) so private keys are listed too
  tether hsm list --tpm [DEVICE]
        the TPM's maker, lockout state and persistent keys (default /dev/tpmrm0)
  tether hsm keygen --key URI --type ec-p256|ec-p384|rsa-2048
        generate a key pair in the token (sensitive, never extractable), or in
        the TPM: a TSS2 key file (tpm:file=) or a persistent key (tpm:handle=)
  tether hsm csr --key URI --subject "CN=gw-0001,O=Example"
        print a PEM certificate signing request signed in the token
  tether hsm selftest --key URI [--certificate FILE] [--count N]
        sign and verify with the key (against the certificate), with timing

URI: pkcs11:token=LABEL;object=KEY?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/tether/pin
     tpm:file=/etc/tether/device.tss2?pin-source=file:/etc/tether/tpm-pin
     tpm:handle=0x81000002?device=/dev/tpmrm0
`

// runHSM implements `tether hsm ...`.
func runHSM(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, hsmUsage)
		return exitUsage
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "list":
		return hsmList(ctx, rest, stdout, stderr)
	case "keygen":
		return hsmKeygen(ctx, rest, stdout, stderr)
	case "csr":
		return hsmCSR(ctx, rest, stdout, stderr)
	case "selftest":
		return hsmSelftest(ctx, rest, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, hsmUsage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "tether hsm: unknown command %q\n%s", cmd, hsmUsage)
		return exitUsage
	}
}

func hsmFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("tether hsm "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parseFlags parses and reports whether the command should stop with code.
func parseFlags(fs *flag.FlagSet, args []string) (int, bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK, true
		}
		return exitUsage, true
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return exitUsage, true
	}
	return 0, false
}

// hsmExit maps an hsm error to the exit status: a token that is absent or
// lost is a runtime failure (1), anything else is configuration (2).
func hsmExit(stderr io.Writer, cmd string, err error) int {
	fmt.Fprintf(stderr, "tether hsm %s: %v\n", cmd, err)
	if errors.Is(err, hsm.ErrTokenUnavailable) {
		return exitRuntime
	}
	return exitUsage
}

func requireKey(fs *flag.FlagSet, key string) bool {
	if key == "" || !hsm.IsURI(key) && !tpm.IsURI(key) {
		fmt.Fprintf(fs.Output(), "%s: --key pkcs11:... or tpm:... is required\n", fs.Name())
		return false
	}
	return true
}

func hsmList(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := hsmFlags("list", stderr)
	module := fs.String("module", hsm.DefaultModule, "PKCS#11 module `path`")
	key := fs.String("key", "", "log into this URI's token (its pin-source) to list private objects too")
	tpmDev := fs.String("tpm", "", "list the TPM at this `device` instead (default "+tpm.DefaultDevice+" with --tpm alone)")
	args = tpmFlagDefault(args)
	if code, stop := parseFlags(fs, args); stop {
		return code
	}
	if *tpmDev != "" {
		return hsmListTPM(ctx, *tpmDev, stdout, stderr)
	}
	var login *hsm.URI
	if *key != "" {
		u, err := hsm.ParseURI(*key)
		if err != nil {
			return hsmExit(stderr, "list", err)
		}
		login = u
	}
	slots, err := hsm.List(ctx, *module, login)
	if err != nil {
		return hsmExit(stderr, "list", err)
	}
	if login != nil {
		*module = login.ModulePath
	}
	fmt.Fprintf(stdout, "module %s: %d slot(s)\n", *module, len(slots))
	for _, s := range slots {
		fmt.Fprintf(stdout, "slot-id %d: %s\n", s.ID, s.Description)
		t := s.Token
		switch {
		case t == nil:
			fmt.Fprintln(stdout, "  no token")
			continue
		case !t.Initialized:
			fmt.Fprintln(stdout, "  token not initialised")
			continue
		}
		var flags []string
		if t.LoginRequired {
			flags = append(flags, "login required")
		}
		if t.UserPINLocked {
			flags = append(flags, "USER PIN LOCKED")
		}
		if t.LoggedIn {
			flags = append(flags, "logged in")
		} else {
			flags = append(flags, "public objects only")
		}
		fmt.Fprintf(stdout, "  token %q serial %s model %q manufacturer %q (%s)\n", t.Label, t.Serial, t.Model, t.Manufacturer, strings.Join(flags, ", "))
		if len(t.Objects) == 0 {
			fmt.Fprintln(stdout, "    no objects visible")
		}
		for _, o := range t.Objects {
			line := fmt.Sprintf("    %-10s label=%q id=%s", o.Class, o.Label, hexID(o.ID))
			if o.KeyType != "" {
				line += " type=" + strings.ReplaceAll(o.KeyType, " ", "-")
			}
			if o.Class == "private" || o.Class == "secret-key" {
				line += fmt.Sprintf(" sensitive=%t extractable=%t", o.Sensitive, o.Extractable)
			}
			fmt.Fprintln(stdout, line)
		}
	}
	return exitOK
}

func hexID(id []byte) string {
	if len(id) == 0 {
		return "-"
	}
	var b strings.Builder
	for _, c := range id {
		fmt.Fprintf(&b, "%%%02x", c)
	}
	return b.String()
}

func hsmKeygen(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := hsmFlags("keygen", stderr)
	key := fs.String("key", "", "PKCS#11 `URI` (object= names it) or tpm: reference of the key to create")
	typ := fs.String("type", "ec-p256", "key `type`: ec-p256, ec-p384 or rsa-2048")
	if code, stop := parseFlags(fs, args); stop {
		return code
	}
	if !requireKey(fs, *key) {
		return exitUsage
	}
	if tpm.IsURI(*key) {
		return hsmKeygenTPM(ctx, *key, hsm.KeyType(*typ), stdout, stderr)
	}
	pub, err := hsm.GenerateKey(ctx, *key, hsm.KeyType(*typ))
	if err != nil {
		return hsmExit(stderr, "keygen", err)
	}
	u, _ := hsm.ParseURI(*key)
	fmt.Fprintf(stderr, "generated %s key %s (sensitive, not extractable)\n", *typ, u)
	return printPublicKey(stdout, stderr, pub)
}

// printPublicKey writes pub as a PEM PUBLIC KEY block.
func printPublicKey(stdout, stderr io.Writer, pub crypto.PublicKey) int {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return hsmExit(stderr, "keygen", err)
	}
	pem.Encode(stdout, &pem.Block{Type: "PUBLIC KEY", Bytes: der})
	return exitOK
}

// parseSubject reads "CN=gw,O=Org,OU=Unit,C=DE,ST=Bavaria,L=Munich";
// a leading "/" form ("/CN=gw/O=Org") as openssl prints it works too.
func parseSubject(s string) (pkix.Name, error) {
	var n pkix.Name
	sep := ","
	if strings.HasPrefix(s, "/") {
		sep, s = "/", s[1:]
	}
	for part := range strings.SplitSeq(s, sep) {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || v == "" {
			return n, fmt.Errorf("--subject: %q is not KEY=VALUE", part)
		}
		switch strings.ToUpper(k) {
		case "CN":
			n.CommonName = v
		case "O":
			n.Organization = append(n.Organization, v)
		case "OU":
			n.OrganizationalUnit = append(n.OrganizationalUnit, v)
		case "C":
			n.Country = append(n.Country, v)
		case "ST":
			n.Province = append(n.Province, v)
		case "L":
			n.Locality = append(n.Locality, v)
		case "SERIALNUMBER":
			n.SerialNumber = v
		default:
			return n, fmt.Errorf("--subject: attribute %q not supported (CN, O, OU, C, ST, L, serialNumber)", k)
		}
	}
	if n.CommonName == "" {
		return n, errors.New("--subject: CN= is required")
	}
	return n, nil
}

func hsmCSR(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := hsmFlags("csr", stderr)
	key := fs.String("key", "", "PKCS#11 `URI` or tpm: reference of the key")
	subject := fs.String("subject", "", `certificate subject, e.g. "CN=gw-0001,O=Example"`)
	if code, stop := parseFlags(fs, args); stop {
		return code
	}
	if !requireKey(fs, *key) {
		return exitUsage
	}
	name, err := parseSubject(*subject)
	if err != nil {
		fmt.Fprintf(stderr, "tether hsm csr: %v\n", err)
		return exitUsage
	}
	k, err := hsm.OpenKey(ctx, *key)
	if err != nil {
		return hsmExit(stderr, "csr", err)
	}
	defer k.Close()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: name}, k)
	if err != nil {
		fmt.Fprintf(stderr, "tether hsm csr: signing in the token: %v\n", err)
		return exitRuntime
	}
	pem.Encode(stdout, &pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	return exitOK
}

func hsmSelftest(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := hsmFlags("selftest", stderr)
	key := fs.String("key", "", "PKCS#11 `URI`, tpm: reference or PEM file of the key")
	certFile := fs.String("certificate", "", "device certificate `file` to verify against (default: the key's public key)")
	count := fs.Int("count", 20, "number of signatures")
	if code, stop := parseFlags(fs, args); stop {
		return code
	}
	if *key == "" || *count < 1 {
		fmt.Fprintln(stderr, "tether hsm selftest: --key is required and --count must be at least 1")
		return exitUsage
	}
	start := time.Now()
	var signer crypto.Signer
	var pub crypto.PublicKey
	if *certFile != "" {
		id, err := hsm.Open(ctx, *certFile, *key)
		if err != nil {
			return hsmExit(stderr, "selftest", err)
		}
		defer id.Close()
		signer, pub = id.Key(), id.Leaf().PublicKey
		fmt.Fprintf(stdout, "certificate %s: subject %q, valid until %s, matches the key\n", *certFile, id.Leaf().Subject.String(), id.Leaf().NotAfter.UTC().Format(time.RFC3339))
	} else {
		k, err := hsm.OpenKey(ctx, *key)
		if err != nil {
			return hsmExit(stderr, "selftest", err)
		}
		defer k.Close()
		signer, pub = k, k.Public()
	}
	opened := time.Since(start)
	var opts crypto.SignerOpts = crypto.SHA256
	kind := "ECDSA"
	if _, ok := pub.(*rsa.PublicKey); ok {
		opts, kind = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}, "RSA-PSS"
	}
	start = time.Now()
	for i := range *count {
		digest := sha256.Sum256(fmt.Appendf(nil, "tether selftest %d", i))
		sig, err := signer.Sign(rand.Reader, digest[:], opts)
		if err != nil {
			fmt.Fprintf(stderr, "tether hsm selftest: signature %d: %v\n", i+1, err)
			return exitRuntime
		}
		if err := verifySig(pub, digest[:], sig, opts); err != nil {
			fmt.Fprintf(stderr, "tether hsm selftest: signature %d does not verify: %v\n", i+1, err)
			return exitRuntime
		}
	}
	d := time.Since(start)
	fmt.Fprintf(stdout, "key %s: open %s; %d %s-SHA256 signatures verified in %s (%.2f ms each, %.0f/s)\n",
		locationOf(signer), opened.Round(time.Microsecond), *count, kind, d.Round(time.Microsecond),
		float64(d.Microseconds())/1000/float64(*count), float64(*count)/d.Seconds())
	return exitOK
}

func locationOf(s crypto.Signer) string {
	if k, ok := s.(*hsm.Key); ok {
		return k.Location()
	}
	return "?"
}

func verifySig(pub crypto.PublicKey, digest, sig []byte, opts crypto.SignerOpts) error {
	switch p := pub.(type) {
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(p, digest, sig) {
			return errors.New("ECDSA verification failed")
		}
		return nil
	case *rsa.PublicKey:
		return rsa.VerifyPSS(p, crypto.SHA256, digest, sig, opts.(*rsa.PSSOptions))
	default:
		return fmt.Errorf("unsupported public key %T", pub)
	}
}
