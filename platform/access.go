package platform

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
)

// Access is what an account needs of a file: the read, write and
// execute/search bits of its mode.
type Access uint32

// The accesses CanAccess checks.
const (
	Read  Access = 4
	Write Access = 2
	Exec  Access = 1
)

func (a Access) String() string {
	s := ""
	for _, b := range []struct {
		bit  Access
		name string
	}{{Read, "read"}, {Write, "write"}, {Exec, "search"}} {
		if a&b.bit != 0 {
			if s != "" {
				s += "+"
			}
			s += b.name
		}
	}
	return s
}

// Account is the user a service runs as, with its groups.
type Account struct {
	Name string
	UID  int
	GIDs []int // primary first
}

// LookupAccount finds a user and its groups (in /etc/passwd and
// /etc/group, or NSS in cgo builds).
func LookupAccount(name string) (Account, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return Account{}, err
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return Account{}, fmt.Errorf("user %s: uid %q: %w", name, u.Uid, err)
	}
	a := Account{Name: name, UID: uid}
	ids, err := u.GroupIds()
	if err != nil {
		ids = nil // the primary group still counts
	}
	for _, s := range append([]string{u.Gid}, ids...) {
		if g, err := strconv.Atoi(s); err == nil && !slices.Contains(a.GIDs, g) {
			a.GIDs = append(a.GIDs, g)
		}
	}
	return a, nil
}

// CanAccess returns an error unless a may access path as want asks: search
// permission on every directory above it, then want on path itself, by the
// owner, group and other bits of their modes (ACLs and capabilities other
// than root's are not looked at). The error names the file that stops it
// and what to change.
func (a Account) CanAccess(path string, want Access) error {
	path = filepath.Clean(path)
	for dir := filepath.Dir(path); ; dir = filepath.Dir(dir) {
		if err := a.check(dir, Exec); err != nil {
			return err
		}
		if dir == "/" || dir == "." {
			break
		}
	}
	return a.check(path, want)
}

func (a Account) check(path string, want Access) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	perm := Access(fi.Mode().Perm())
	var have Access
	switch {
	case a.UID == 0:
		have = Read | Write
		if fi.IsDir() || perm&0o111 != 0 {
			have |= Exec
		}
	case int(st.Uid) == a.UID:
		have = perm >> 6 & 7
	case slices.Contains(a.GIDs, int(st.Gid)):
		have = perm >> 3 & 7
	default:
		have = perm & 7
	}
	if missing := want &^ have; missing != 0 {
		return fmt.Errorf("user %s cannot %s %s (mode %04o, owner %d:%d); give it to that user or its group (chown/chmod)",
			a.Name, missing, path, fi.Mode().Perm(), st.Uid, st.Gid)
	}
	return nil
}
