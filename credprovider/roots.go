package credprovider

import (
	"crypto/x509"
	"embed"
	"encoding/pem"
	"fmt"
	"os"
)

// The AWS IoT credentials endpoints present certificates that chain to Amazon
// Root CA 1 (RSA) or Amazon Root CA 3 (ECDSA). They are embedded so that a
// gateway whose system trust store is missing, stale or deliberately narrowed
// (and whatever AWS_CA_BUNDLE or SSL_CERT_FILE happen to say) still verifies
// the endpoint the same way.
//
//go:embed roots/AmazonRootCA1.pem roots/AmazonRootCA3.pem
var amazonRoots embed.FS

// AmazonRootCAs returns a new pool holding the embedded Amazon Root CA 1 and
// Amazon Root CA 3. Each call returns a fresh pool the caller may extend.
func AmazonRootCAs() *x509.CertPool {
	pool := x509.NewCertPool()
	for _, name := range []string{"roots/AmazonRootCA1.pem", "roots/AmazonRootCA3.pem"} {
		// Both files are compiled in and TestAmazonRootCAs checks that
		// they parse, so neither step can fail in a released binary; were
		// it to, the pool would be smaller and verification would fail
		// with a clear "not signed by a trusted CA" error instead of a
		// panic.
		data, _ := amazonRoots.ReadFile(name)
		pool.AppendCertsFromPEM(data)
	}
	return pool
}

// LoadCAFile reads a PEM bundle of trusted root certificates, e.g. the
// [aws] ca_file setting, and returns it as a pool. The error names the file
// and says what is wrong with it (an *OptionError for the field "CAFile").
// Every CERTIFICATE block must parse: a bundle with one broken block is
// refused rather than trusted in part.
func LoadCAFile(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &OptionError{Field: "CAFile", Issue: err.Error()}
	}
	pool := x509.NewCertPool()
	n := 0
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, &OptionError{Field: "CAFile", Issue: fmt.Sprintf("%s: certificate %d: %v; fix or remove that block", path, n+1, err)}
		}
		pool.AddCert(cert)
		n++
	}
	if n == 0 {
		return nil, &OptionError{Field: "CAFile", Issue: fmt.Sprintf("%s holds no PEM \"CERTIFICATE\" block; give a PEM bundle of root CAs, or none for the embedded Amazon roots", path)}
	}
	return pool, nil
}
