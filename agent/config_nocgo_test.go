//go:build !cgo || nopkcs11

package agent

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestStaticBuildTakesPKCS11Key ensures that `tether config check` of a
// static build accepts a pkcs11: key (p11-kit hosts the module) and names
// what reaching it needs when that is missing.
func TestStaticBuildTakesPKCS11Key(t *testing.T) {
	dir := writeIdentityFiles(t)
	key := func(uri string) string {
		return strings.Replace(minimalConfig(dir), `"`+dir+`/device.key"`, `"`+uri+`"`, 1)
	}
	_, err := ParseConfig("t.toml", []byte(key("pkcs11:token=t;object=k?module-path=/usr/lib/softhsm/libsofthsm2.so")))
	require.NoError(t, err)

	_, err = ParseConfig("t.toml", []byte(key("pkcs11:token=t;object=k?x-p11-kit="+dir+"/none.sock")))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "t.toml:5: identity.private_key: x-p11-kit="+dir+"/none.sock")
	assert.Contains(t, err.Error(), "start `p11-kit server`")
}
