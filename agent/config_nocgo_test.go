//go:build !cgo || nopkcs11

package agent

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestStaticBuildRefusesPKCS11Key: `tether config check` of a static build
// says which build a pkcs11: key needs, before anything starts.
func TestStaticBuildRefusesPKCS11Key(t *testing.T) {
	dir := writeIdentityFiles(t)
	cfg := strings.Replace(minimalConfig(dir), `"`+dir+`/device.key"`, `"pkcs11:token=t;object=k?module-path=/usr/lib/softhsm/libsofthsm2.so"`, 1)
	_, err := ParseConfig("t.toml", []byte(cfg))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "t.toml:5: identity.private_key: pkcs11: keys need the PKCS#11 build (tether-pkcs11-linux-*")
}
