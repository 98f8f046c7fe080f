package platform

import (
	"bufio"
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// TrimResident hands back to the kernel the memory that start-up used and
// idling does not: the heap's free pages (debug.FreeOSMemory) and the pages
// of tether's own executable mapped so far (madvise MADV_PAGEOUT on its
// read-only mappings). A static Go binary is otherwise almost wholly
// resident after start-up — configuration parsing, the SDK, certificate
// handling and TLS handshakes touch most of it once — and on a gateway that
// is most of the agent's RSS. The pages are clean and file-backed: those the
// agent touches again are faulted back in from the page cache (or the
// flash), once. It returns the bytes of executable mappings advised.
func TrimResident() (int, error) {
	debug.FreeOSMemory()
	exe, err := os.Executable()
	if err != nil {
		return 0, fmt.Errorf("trim resident memory: %w", err)
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return 0, fmt.Errorf("trim resident memory: %w", err)
	}
	defer f.Close()
	total := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// 00400000-00c4e000 r-xp 00000000 fd:01 123 /usr/bin/tether
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[5] != exe || strings.Contains(fields[1], "w") {
			continue
		}
		lo, hi, ok := strings.Cut(fields[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		// By address: these mappings are not Go memory.
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, uintptr(start), uintptr(end-start), unix.MADV_PAGEOUT); errno != 0 {
			// Kernels before 5.4 have no MADV_PAGEOUT: nothing to trim.
			return total, fmt.Errorf("trim resident memory: madvise: %w", errno)
		}
		total += int(end - start)
	}
	return total, sc.Err()
}
