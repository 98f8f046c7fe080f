package packaging

import (
	"bytes"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The package tests run with `make test-packages`, which builds every
// package and sets TETHER_PACKAGES to dist/packages.
func packagesDir(t *testing.T) string {
	dir := os.Getenv("TETHER_PACKAGES")
	if dir == "" {
		t.Skip("the package tests run with `make test-packages` (it builds the packages they read)")
	}
	return dir
}

// packageFiles is what every package holds, whatever its format.
var packageFiles = []string{
	"/usr/bin/tether",
	"/usr/lib/systemd/system/tether.service",
	"/usr/lib/systemd/system/tether.socket",
	"/usr/lib/sysusers.d/tether.conf",
	"/usr/lib/tmpfiles.d/tether.conf",
	"/etc/tether/tether.toml",
	"/usr/share/doc/tether/README.md",
	"/usr/share/doc/tether/systemd.md",
	"/usr/share/doc/tether/packaging.md",
	"/usr/share/doc/tether/examples/pkcs11-pin.conf",
	"/usr/share/doc/tether/examples/tpm2.conf",
	"/usr/share/doc/tether/examples/workloads.conf",
	"/usr/share/doc/tether/examples/local-endpoints.conf",
	"/usr/share/doc/tether/examples/tether-metrics.service",
	"/usr/share/doc/tether/examples/tether-metrics.timer",
	"/usr/share/doc/tether/metrics.md",
	"/usr/share/doc/tether/doctor.md",
	"/usr/share/doc/tether/workloads.md",
	"/usr/share/doc/tether/identity.md",
	"/usr/share/man/man1/tether.1.gz",
}

// formats: for each package format, where its licence goes, whether it
// carries the cgo PKCS#11 build (dynamically linked against glibc) or the
// static one, and its architecture names for amd64, arm64, armv7.
var formats = []struct {
	ext     string
	licence string
	glibc   bool
	arches  [3]string
}{
	{".deb", "/usr/share/doc/tether/copyright", true, [3]string{"_amd64", "_arm64", "_armhf"}},
	{".rpm", "/usr/share/licenses/tether/LICENSE", true, [3]string{".x86_64", ".aarch64", ".armv7hl"}},
	{".ipk", "/usr/share/doc/tether/LICENSE", false, [3]string{"_x86_64", "_arm64", "_armhf"}},
	{".apk", "/usr/share/licenses/tether/LICENSE", false, [3]string{"_x86_64", "_aarch64", "_armv7"}},
}

var elfMachines = [3]elf.Machine{elf.EM_X86_64, elf.EM_AARCH64, elf.EM_ARM}

// TestPackageContents ensures that each of the twelve packages (four
// formats, three architectures) lists the binary, units, sysusers and
// tmpfiles files, the configuration (as a file an upgrade keeps when
// changed), docs and licence, its maintainer scripts, and carries the build
// docs/packaging.md names for its format; the .deb suggests tpm-udev.
func TestPackageContents(t *testing.T) {
	dir := packagesDir(t)
	for _, f := range formats {
		for i, arch := range f.arches {
			matches, _ := filepath.Glob(filepath.Join(dir, "tether*"+arch+f.ext))
			name := strings.TrimPrefix(f.ext, ".") + arch
			t.Run(name, func(t *testing.T) {
				require.Len(t, matches, 1, "one %s package for %s in %s", f.ext, arch, dir)
				pkg := matches[0]
				files, conffiles, scripts, binary := inspect(t, pkg, f.ext)
				for _, want := range append(packageFiles, f.licence) {
					assert.Contains(t, files, want)
				}
				assert.Contains(t, conffiles, "/etc/tether/tether.toml", "a config file, kept when changed")
				if f.ext == ".deb" {
					out, err := exec.Command("dpkg-deb", "-f", pkg, "Suggests").Output()
					require.NoError(t, err)
					assert.Equal(t, "tpm-udev", strings.TrimSpace(string(out)), "the TPM drop-in's group tss comes with tpm-udev")
				}
				for _, s := range []string{"systemd-sysusers", "try-restart tether.service", "disable --now tether.service tether.socket"} {
					assert.Contains(t, scripts, s)
				}

				exe, err := elf.NewFile(bytes.NewReader(binary))
				require.NoError(t, err, "/usr/bin/tether is not ELF")
				assert.Equal(t, elfMachines[i], exe.Machine)
				dynamic := false
				for _, p := range exe.Progs {
					dynamic = dynamic || p.Type == elf.PT_INTERP
				}
				assert.Equal(t, f.glibc, dynamic, "glibc formats carry the PKCS#11 (cgo) build, the others the static one")
			})
		}
	}
}

// TestPackageLintian ensures that lintian finds nothing in the .deb packages
// beyond the warnings docs/packaging.md explains.
func TestPackageLintian(t *testing.T) {
	dir := packagesDir(t)
	if _, err := exec.LookPath("lintian"); err != nil {
		t.Fatal("lintian missing: apt-get install lintian (make deps)")
	}
	// Each one is explained in docs/packaging.md, "lintian".
	explained := map[string]bool{
		"maintainer-script-calls-systemctl": true,
		"initial-upload-closes-no-bugs":     true,
	}
	debs, _ := filepath.Glob(filepath.Join(dir, "*.deb"))
	require.Len(t, debs, 3)
	for _, deb := range debs {
		out, _ := exec.Command("lintian", "--allow-root", "--tag-display-limit", "0", deb).CombinedOutput()
		for _, line := range strings.Split(string(out), "\n") {
			m := regexp.MustCompile(`^([EW]): tether: (\S+)`).FindStringSubmatch(line)
			if m != nil && !explained[m[2]] {
				t.Errorf("%s: %s", filepath.Base(deb), line)
			}
		}
	}
}

// inspect lists a package's files, its config files, the text of its
// maintainer scripts and the bytes of /usr/bin/tether, with each format's
// own tool (dpkg-deb, rpm) or tar for ipk and apk.
func inspect(t *testing.T, pkg, ext string) (files, conffiles []string, scripts string, binary []byte) {
	t.Helper()
	work := t.TempDir()
	run := func(name string, args ...string) string {
		t.Helper()
		out, err := exec.Command(name, args...).Output()
		require.NoError(t, err, "%s %s", name, strings.Join(args, " "))
		return string(out)
	}
	tarNames := func(listing string) []string {
		var names []string
		for _, l := range strings.Split(strings.TrimSpace(listing), "\n") {
			f := strings.Fields(l)
			if len(f) == 0 {
				continue
			}
			n := "/" + strings.TrimPrefix(strings.TrimPrefix(f[len(f)-1], "."), "/")
			if !strings.HasSuffix(n, "/") {
				names = append(names, n)
			}
		}
		return names
	}
	switch ext {
	case ".deb":
		files = tarNames(run("dpkg-deb", "-c", pkg))
		conffiles = strings.Fields(run("dpkg-deb", "-I", pkg, "conffiles"))
		for _, s := range []string{"postinst", "prerm", "postrm"} {
			scripts += run("dpkg-deb", "-I", pkg, s)
		}
		run("dpkg-deb", "-x", pkg, work)
	case ".rpm":
		files = strings.Fields(run("rpm", "-qlp", pkg))
		conffiles = strings.Fields(run("rpm", "-qcp", pkg))
		scripts = run("rpm", "-qp", "--scripts", pkg)
		// The payload's paths are absolute: never extract them as they are.
		cmd := exec.Command("sh", "-c", "rpm2cpio \"$1\" | cpio -idm --quiet --no-absolute-filenames", "sh", pkg)
		cmd.Dir = work
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "rpm2cpio: %s", out)
	case ".ipk":
		// An ipk is a tar.gz of debian-binary, control.tar.gz, data.tar.gz.
		run("tar", "-xzf", pkg, "-C", work)
		files = tarNames(run("tar", "-tvzf", filepath.Join(work, "data.tar.gz")))
		run("tar", "-xzf", filepath.Join(work, "control.tar.gz"), "-C", work)
		b, err := os.ReadFile(filepath.Join(work, "conffiles"))
		require.NoError(t, err)
		conffiles = strings.Fields(string(b))
		for _, s := range []string{"postinst", "prerm", "postrm"} {
			b, err := os.ReadFile(filepath.Join(work, s))
			require.NoError(t, err)
			scripts += string(b)
		}
		run("tar", "-xzf", filepath.Join(work, "data.tar.gz"), "-C", work)
	case ".apk":
		// An apk is gzip streams of tar segments: control (.PKGINFO,
		// scripts), then data; tar reads them as one archive.
		listing := run("tar", "--ignore-zeros", "-tvzf", pkg)
		for _, n := range tarNames(listing) {
			if !strings.HasPrefix(n, "/.") {
				files = append(files, n)
			}
		}
		run("tar", "--ignore-zeros", "-xzf", pkg, "-C", work)
		for _, s := range []string{".post-install", ".post-upgrade", ".pre-deinstall", ".post-deinstall"} {
			b, err := os.ReadFile(filepath.Join(work, s))
			require.NoError(t, err)
			scripts += string(b)
		}
		// apk has no conffile list: every file under /etc is kept when
		// changed (apk writes the new one as .apk-new).
		for _, f := range files {
			if strings.HasPrefix(f, "/etc/") {
				conffiles = append(conffiles, f)
			}
		}
	}
	binary, err := os.ReadFile(filepath.Join(work, "usr/bin/tether"))
	require.NoError(t, err)
	return files, conffiles, scripts, binary
}
