package hsm

import (
	"crypto/x509"
	"fmt"
	"time"
)

// LoadCertificateChain reads a certificate file as Open does: the device
// certificate first, then any intermediates.
func LoadCertificateChain(file string) ([]*x509.Certificate, error) { return loadChain(file) }

// CheckChain checks the chain read from file without the key: the device
// certificate is valid at now (the rule Open applies), each certificate is
// signed by the one after it, and, when roots is set, the chain verifies
// against roots for client authentication at now. The error names the
// file, the certificate and what to do.
func CheckChain(file string, chain []*x509.Certificate, roots *x509.CertPool, now time.Time) error {
	if len(chain) == 0 {
		return fmt.Errorf("%w: certificate %s holds no certificate", ErrBadKey, file)
	}
	if err := checkValidity(file, chain[0], now); err != nil {
		return err
	}
	for i := 0; i+1 < len(chain); i++ {
		if err := chain[i].CheckSignatureFrom(chain[i+1]); err != nil {
			return fmt.Errorf("%w: certificate %s: certificate %d (%q) is not signed by certificate %d (%q): %v; put the device certificate first, then each issuer in order",
				ErrBadKey, file, i+1, chain[i].Subject.String(), i+2, chain[i+1].Subject.String(), err)
		}
	}
	if roots == nil {
		return nil
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		return fmt.Errorf("%w: certificate %s (issuer %q) does not verify against the CA: %v; install the certificate the CA issued, or check the CA file",
			ErrBadKey, file, chain[0].Issuer.String(), err)
	}
	return nil
}
