package agent

import (
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestByArea ensures that doctor's findings come in areaOrder, each area's
// in the order they were found, exactly as a stable sort by area would put
// them (an area areaOrder does not name first, as its rank is 0).
func TestByArea(t *testing.T) {
	for _, tc := range []struct {
		name  string
		areas []string
	}{
		{"empty", nil},
		{"one area", []string{"roles", "roles"}},
		{"reversed", []string{"roles", "agent", "network", "files", "certificate", "clock"}},
		{"interleaved", []string{"network", "clock", "network", "files", "clock", "roles", "files", "certificate"}},
		{"unknown area", []string{"files", "other", "clock", "other"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var in []Finding
			for i, a := range tc.areas {
				in = append(in, Finding{Area: a, Check: string(rune('a' + i))})
			}
			want := slices.Clone(in)
			slices.SortStableFunc(want, func(a, b Finding) int { return areaOrder[a.Area] - areaOrder[b.Area] })
			got := byArea(slices.Clone(in))
			if len(want) == 0 {
				assert.Empty(t, got)
				return
			}
			assert.Equal(t, want, got)
		})
	}
}
