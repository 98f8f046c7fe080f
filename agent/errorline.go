package agent

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// What one error line may quote. Errors quote the value at fault, which is
// what makes them useful, but a value can be anything a file holds: a 10 MB
// role_alias was printed in full. Each quoted value is cut to maxQuoted
// characters (saying how long it was) and a line to maxLine bytes.
const (
	maxQuoted = 64
	maxLine   = 2048
)

// ErrorLine renders err as one bounded line for a log or a terminal:
// newlines become "; " and long quoted values are elided (see maxQuoted).
func ErrorLine(err error) string {
	return BoundLine(strings.ReplaceAll(err.Error(), "\n", "; "))
}

// BoundLine elides every Go-quoted value in s longer than maxQuoted
// characters and cuts s to maxLine bytes.
func BoundLine(s string) string {
	if !strings.Contains(s, `"`) && len(s) <= maxLine {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		if s[i] == '"' {
			if q, err := strconv.QuotedPrefix(s[i:]); err == nil {
				v, _ := strconv.Unquote(q)
				if utf8.RuneCountInString(v) > maxQuoted {
					shown := []rune(v)[:maxQuoted]
					quoted := strconv.Quote(string(shown))
					fmt.Fprintf(&b, "%s…\" (%d bytes)", quoted[:len(quoted)-1], len(v))
				} else {
					b.WriteString(q)
				}
				i += len(q)
				continue
			}
		}
		b.WriteByte(s[i])
		i++
		if b.Len() > maxLine {
			break
		}
	}
	out := b.String()
	if len(out) > maxLine {
		cut := maxLine
		for cut > 0 && !utf8.RuneStart(out[cut]) {
			cut--
		}
		out = out[:cut] + fmt.Sprintf("… (line cut at %d bytes)", maxLine)
	}
	return out
}
