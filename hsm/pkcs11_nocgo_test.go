//go:build !cgo || nopkcs11

package hsm_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tetherd/tether/hsm"
)

// TestStaticBuildRefusesPKCS11 ensures that a CGO_ENABLED=0 build refuses pkcs11: keys with ErrPKCS11Unavailable and still opens PEM keys.
func TestStaticBuildRefusesPKCS11(t *testing.T) {
	_, err := hsm.OpenKey(context.Background(), "pkcs11:token=t;object=o")
	require.ErrorIs(t, err, hsm.ErrPKCS11Unavailable)
	assert.Equal(t, "pkcs11: keys need the PKCS#11 build (tether-pkcs11-linux-*, built with cgo); this binary is static (CGO_ENABLED=0)", err.Error())
}
