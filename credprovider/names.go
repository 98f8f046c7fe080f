package credprovider

import "strings"

// The character-class rules of AWS names (IAM, STS, IoT) are checked byte by
// byte rather than with regular expressions: a compiled regexp costs ~10 KB
// of heap each for the life of the process, and these are the program's
// only ones besides the YAML library's (docs/footprint.md).

// word is the ASCII class \w: letters, digits and underscore.
func word(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_'
}

// nameOf reports whether s has minLen to maxLen bytes, each a letter, a
// digit, an underscore or one of the bytes of extra.
func nameOf(s string, minLen, maxLen int, extra string) bool {
	if len(s) < minLen || len(s) > maxLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !word(c) && strings.IndexByte(extra, c) < 0 {
			return false
		}
	}
	return true
}

// digits reports whether s is n ASCII digits.
func digits(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// lowerLetters reports whether s is one or more of a-z, plus the bytes of
// extra.
func lowerLetters(s, extra string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 'a' || c > 'z') && strings.IndexByte(extra, c) < 0 {
			return false
		}
	}
	return true
}

// iamARN reports whether s is arn:PARTITION:iam::ACCOUNT:KIND/PATH with a
// partition aws[a-z-]*, a 12-digit account (or "aws" when awsAccount, for
// AWS managed policies) and a path of 1-512 of letters, digits and
// _+=,.@/-.
func iamARN(s, kind string, awsAccount bool) bool {
	rest, ok := strings.CutPrefix(s, "arn:aws")
	if !ok {
		return false
	}
	partition, rest, ok := strings.Cut(rest, ":iam::")
	if !ok || partition != "" && !lowerLetters(partition, "-") {
		return false
	}
	account, rest, ok := strings.Cut(rest, ":"+kind+"/")
	if !ok || !digits(account, 12) && !(awsAccount && account == "aws") {
		return false
	}
	return nameOf(rest, 1, 512, "+=,.@/-")
}

// ValidRegion reports whether s has the form of an AWS region name
// (eu-west-1, us-gov-east-1): two letters, one or more dash-separated words
// of a-z, and a dash and a digit.
func ValidRegion(s string) bool {
	parts := strings.Split(s, "-")
	if len(parts) < 3 || len(parts[0]) != 2 || !lowerLetters(parts[0], "") || !digits(parts[len(parts)-1], 1) {
		return false
	}
	for _, p := range parts[1 : len(parts)-1] {
		if !lowerLetters(p, "") {
			return false
		}
	}
	return true
}

// ValidRoleARN reports whether s is an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME).
func ValidRoleARN(s string) bool { return iamARN(s, "role", false) }

// ValidSessionName reports whether s is a valid RoleSessionName (2-64 of
// letters, digits and +=,.@-_).
func ValidSessionName(s string) bool { return nameOf(s, 2, 64, "+=,.@-") }

// validThingName: 1-128 of a-z A-Z 0-9 : _ - (AWS IoT's thing name rule).
func validThingName(s string) bool { return nameOf(s, 1, 128, ":-") }

// validRoleAlias: 1-128 of letters, digits and =,@-_ (AWS IoT's role alias rule).
func validRoleAlias(s string) bool { return nameOf(s, 1, 128, "=,@-") }

// validPolicyARN: a customer or AWS managed IAM policy ARN.
func validPolicyARN(s string) bool { return iamARN(s, "policy", true) }

// validMFASerial: an MFA device's serial number or ARN, 9-256 of letters,
// digits and +=/:,.@-_.
func validMFASerial(s string) bool { return nameOf(s, 9, 256, "+=/:,.@-") }

// validExternalID: 2-1000 of letters, digits and +=,.@:/-_.
func validExternalID(s string) bool { return nameOf(s, 2, 1000, "+=,.@:/-") }

// validTag reports whether s is a session tag key or value STS accepts:
// minLen to maxLen characters (as STS counts them), each a letter, a
// number, a space or one of _.:/=+-@ (tagRune).
func validTag(s string, minLen, maxLen int) bool {
	n := 0
	for _, r := range s {
		if !tagRune(r) {
			return false
		}
		n++
	}
	return n >= minLen && n <= maxLen
}
