package mqtt

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// AWS IoT Core limits checked before a message is queued, so that a message
// the broker would refuse is refused locally, with the rule named, instead of
// blocking the outbox or vanishing later.
const (
	MaxTopicBytes   = 256        // topic length in UTF-8 bytes
	MaxTopicSlashes = 7          // "7 forward slashes": at most 8 levels
	MaxPayloadBytes = 128 * 1024 // 128 KiB per publish
)

// ErrInvalid is wrapped by every RuleError; check with errors.Is.
var ErrInvalid = errors.New("invalid MQTT request")

// RuleError is a refusal that names the rule broken. Code is a stable
// machine-readable name, used as the "code" of the HTTP error body.
type RuleError struct {
	Code    string // e.g. "topic_too_long"
	Message string
}

func (e *RuleError) Error() string { return e.Message }

// Unwrap makes errors.Is(err, ErrInvalid) true.
func (e *RuleError) Unwrap() error { return ErrInvalid }

func rule(code, format string, args ...any) error {
	return &RuleError{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ValidatePublish checks a publication against the AWS IoT Core rules:
// non-empty valid UTF-8 topic without wildcards or NUL, at most 256 bytes and
// 7 slashes, payload at most 128 KiB, QoS 0 or 1 (AWS IoT does not support
// QoS 2).
func ValidatePublish(topic string, payload []byte, qos byte) error {
	if err := validateName(topic, "topic"); err != nil {
		return err
	}
	if strings.ContainsAny(topic, "+#") {
		return rule("topic_wildcard", "topic %q contains a wildcard (+ or #): wildcards are only allowed in subscriptions", topic)
	}
	if len(payload) > MaxPayloadBytes {
		return rule("payload_too_large", "payload is %d bytes; AWS IoT Core accepts at most %d bytes (128 KiB) per message", len(payload), MaxPayloadBytes)
	}
	return validateQoS(qos)
}

func validateQoS(qos byte) error {
	if qos > 1 {
		return rule("qos_unsupported", "QoS %d is not supported: use 0 or 1 (AWS IoT Core does not support QoS 2)", qos)
	}
	return nil
}

// ValidateFilter checks a subscription filter: the topic rules, plus
// wildcard placement (+ alone in its level, # alone and last).
func ValidateFilter(filter string) error {
	if err := validateName(filter, "filter"); err != nil {
		return err
	}
	if filter == "$share" || strings.HasPrefix(filter, "$share/") {
		// A shared subscription (MQTT 5 section 4.8.2, AWS IoT Core):
		// $share/NAME/FILTER, NAME non-empty without wildcards or slashes.
		name, rest, ok := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(filter, "$share"), "/"), "/")
		if !ok || name == "" || rest == "" || strings.ContainsAny(name, "+#") {
			return rule("filter_invalid", "filter %q: a shared subscription is $share/NAME/FILTER, NAME without + or #", filter)
		}
		filter = rest
	}
	levels := strings.Split(filter, "/")
	for i, l := range levels {
		switch {
		case l == "#" && i != len(levels)-1:
			return rule("filter_invalid", "filter %q: # must be the last level", filter)
		case l != "+" && l != "#" && strings.ContainsAny(l, "+#"):
			return rule("filter_invalid", "filter %q: a wildcard (+ or #) must fill a whole level, e.g. a/+/c or a/#", filter)
		}
	}
	return nil
}

func validateName(s, what string) error {
	switch {
	case s == "":
		return rule(what+"_empty", "%s is empty: give one, e.g. dt/gw-0001/temperature", what)
	case !utf8.ValidString(s):
		return rule(what+"_not_utf8", "%s is not valid UTF-8", what)
	case strings.ContainsRune(s, 0):
		return rule(what+"_invalid", "%s contains a NUL character", what)
	case strings.IndexFunc(s, disallowedRune) >= 0:
		r := []rune(s)[runeIndex(s, disallowedRune)]
		return rule(what+"_invalid", "%s contains %U, a control character or Unicode non-character, which MQTT 5 brokers refuse: use printable characters", what, r)
	case len(s) > MaxTopicBytes:
		return rule(what+"_too_long", "%s is %d bytes; AWS IoT Core allows at most %d", what, len(s), MaxTopicBytes)
	case strings.Count(s, "/") > MaxTopicSlashes:
		return rule(what+"_too_deep", "%s %q has %d slashes; AWS IoT Core allows at most %d (8 levels)", what, s, strings.Count(s, "/"), MaxTopicSlashes)
	}
	return nil
}

// disallowedRune reports the code points MQTT 5 (section 1.5.4) says a
// UTF-8 string should not hold and brokers such as mosquitto refuse with a
// disconnect: control characters U+0001–U+001F and U+007F–U+009F, and the
// Unicode non-characters (U+FDD0–U+FDEF and the last two code points of
// every plane, U+FFFE, U+FFFF, U+1FFFE …). Go's UTF-8 decoding already
// refuses surrogates and overlong forms.
func disallowedRune(r rune) bool {
	switch {
	case r <= 0x1f, r >= 0x7f && r <= 0x9f:
		return true
	case r >= 0xfdd0 && r <= 0xfdef:
		return true
	case r&0xfffe == 0xfffe:
		return true
	}
	return false
}

// runeIndex is the index, in runes, of the first rune of s for which f holds.
func runeIndex(s string, f func(rune) bool) int {
	i := 0
	for _, r := range s {
		if f(r) {
			return i
		}
		i++
	}
	return -1
}

// Match reports whether topic matches the subscription filter.
func Match(filter, topic string) bool {
	// Wildcards at the first level do not match $-topics (MQTT 4.7.2).
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	for {
		f, frest, fmore := strings.Cut(filter, "/")
		if f == "#" {
			return true
		}
		t, trest, tmore := strings.Cut(topic, "/")
		if f != "+" && f != t {
			return false
		}
		if !fmore || !tmore {
			// "a/#" also matches "a".
			return fmore == tmore || (!tmore && frest == "#")
		}
		filter, topic = frest, trest
	}
}
