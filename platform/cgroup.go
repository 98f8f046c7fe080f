package platform

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// systemd puts every process it starts in a control group named after its
// unit (/system.slice/uploader.service), and only root may move a process
// into a cgroup it does not own: the cgroup of a local program therefore
// names the unit it runs in, and that program cannot pretend otherwise.

// unitTypes are the unit types a process can run in.
var unitTypes = []string{".service", ".scope", ".socket", ".mount", ".swap", ".slice"}

// ValidUnitName reports whether s is the name of a systemd unit that
// processes run in: NAME.service, NAME@INSTANCE.service, NAME.scope and the
// like (systemd's rules: at most 255 characters of a-z A-Z 0-9 : _ . \ - @,
// an instance after at most one @, a known type suffix). A template
// (NAME@.service) is not a unit: no process runs in it.
func ValidUnitName(s string) bool {
	if len(s) > 255 {
		return false
	}
	var prefix string
	for _, t := range unitTypes {
		if p, ok := strings.CutSuffix(s, t); ok {
			prefix = p
			break
		}
	}
	if prefix == "" {
		return false
	}
	for _, c := range []byte(prefix) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte(":_.\\-@", c) >= 0:
		default:
			return false
		}
	}
	name, instance, templated := strings.Cut(prefix, "@")
	return name != "" && (!templated || (instance != "" && !strings.Contains(instance, "@")))
}

// UnitOfCgroup returns the systemd unit a cgroup path (as /proc/PID/cgroup
// shows it, "/system.slice/uploader.service/…") belongs to: its first
// component that is not a slice, as sd_pid_get_unit reads it; "" when the
// path names no unit (the root, a slice, a cgroup systemd did not make).
// A process of a user's own units is in user@UID.service: a user cannot
// name its way into a system unit.
func UnitOfCgroup(path string) string {
	for _, c := range strings.Split(strings.Trim(path, "/"), "/") {
		if strings.HasSuffix(c, ".slice") {
			continue
		}
		if ValidUnitName(c) {
			return c
		}
		return ""
	}
	return ""
}

// ProcessCgroup returns the cgroup of process pid: its cgroup v2 path from
// /proc/PID/cgroup, or on a legacy or hybrid system without one systemd's
// own name=systemd hierarchy.
func ProcessCgroup(pid int) (string, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return "", err
	}
	defer f.Close()
	var v2, named string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// hierarchy-ID:controllers:path
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			v2 = parts[2]
		case parts[1] == "name=systemd":
			named = parts[2]
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	if (v2 == "" || v2 == "/") && named != "" {
		return named, nil
	}
	if v2 == "" {
		return "", fmt.Errorf("/proc/%d/cgroup names no cgroup v2 or systemd hierarchy", pid)
	}
	return v2, nil
}

// CgroupV2Mount returns where the cgroup v2 hierarchy is mounted
// (/sys/fs/cgroup, or /sys/fs/cgroup/unified on a hybrid system).
func CgroupV2Mount() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		if f := strings.Fields(post); len(f) > 0 && f[0] == "cgroup2" {
			if g := strings.Fields(pre); len(g) > 4 {
				return g[4], nil
			}
		}
	}
	return "", errors.New("no cgroup v2 hierarchy is mounted")
}

// maxCgroups bounds CgroupByID's walk of the hierarchy.
const maxCgroups = 20000

// CgroupByID returns the path (as /proc/PID/cgroup would show it) of the
// cgroup v2 whose id is id: the inode number of its directory, which is what
// the kernel reports as the cgroup of a socket (sock_diag's
// INET_DIAG_CGROUP_ID). It walks the hierarchy, at most maxCgroups
// directories.
func CgroupByID(id uint64) (string, error) {
	root, err := CgroupV2Mount()
	if err != nil {
		return "", err
	}
	found, seen := "", 0
	errFound := errors.New("found")
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if seen++; seen > maxCgroups {
			return fmt.Errorf("more than %d cgroups under %s", maxCgroups, root)
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok && st.Ino == id {
			found = "/" + strings.TrimPrefix(strings.TrimPrefix(path, root), "/")
			return errFound
		}
		return nil
	})
	if found != "" {
		return found, nil
	}
	if err != nil {
		return "", err
	}
	return "", fmt.Errorf("no cgroup with id %d under %s", id, root)
}
