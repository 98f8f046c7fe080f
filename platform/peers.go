package platform

import (
	"bufio"
	"errors"
	"os"
	"strings"
)

// PeersHidden reports why this process cannot see other local programs as
// they are, or nil when it can: a user namespace that maps only some uids
// (systemd's PrivateUsers=yes), where the kernel reports every other uid
// and gid as the overflow id 65534, so SO_PEERCRED cannot tell programs
// apart; or /proc mounted with hidepid (ProtectProc=invisible), which hides
// other users' /proc/PID and with it their groups and cgroup (their
// systemd unit).
func PeersHidden() error {
	var problems []string
	if b, err := os.ReadFile("/proc/self/uid_map"); err == nil {
		if f := strings.Fields(string(b)); len(f) != 3 || f[0] != "0" || f[1] != "0" || f[2] != "4294967295" {
			problems = append(problems, "a user namespace maps only some uids (PrivateUsers=yes), so other programs' uids and gids read as 65534")
		}
	}
	if f, err := os.Open("/proc/self/mountinfo"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			pre, post, _ := strings.Cut(sc.Text(), " - ")
			if g := strings.Fields(pre); len(g) < 5 || g[4] != "/proc" {
				continue
			}
			if p := strings.Fields(post); len(p) >= 3 {
				for _, o := range strings.Split(p[2], ",") {
					if v, ok := strings.CutPrefix(o, "hidepid="); ok && v != "0" && v != "off" {
						problems = append(problems, "/proc is mounted with hidepid="+v+" (ProtectProc=), which hides other programs' groups and cgroups")
					}
				}
			}
		}
	}
	if len(problems) == 0 {
		return nil
	}
	return errors.New(strings.Join(problems, "; "))
}
