package greengrass_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/tetherd/tether/agent/greengrass"
)

// FuzzParse ensures that no Greengrass configuration makes Parse panic, and
// that every refusal is an *Error naming the file.
func FuzzParse(f *testing.F) {
	f.Add([]byte(classic))
	f.Add([]byte("system: {}\nservices: {}\n"))
	f.Add([]byte("- a\n- b\n"))
	f.Add([]byte("system:\n  thingName: [1, 2]\n"))
	f.Add([]byte("\t: :"))
	f.Add([]byte("&a [*a]"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, err := greengrass.Parse("gg.yaml", b)
		if err == nil {
			return
		}
		var ge *greengrass.Error
		if !errors.As(err, &ge) {
			t.Fatalf("refusal is not a *greengrass.Error: %T %v", err, err)
		}
		if !strings.Contains(err.Error(), "gg.yaml") {
			t.Fatalf("error does not name the file: %v", err)
		}
	})
}
