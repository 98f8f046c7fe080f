package platform

import (
	"os"
	"path/filepath"
	"strings"
)

// Default locations used when systemd did not pass the directory variables
// (another init system, or a shell).
const (
	DefaultStateDir   = "/var/lib/tether"
	DefaultRuntimeDir = "/run/tether"
	DefaultConfigDir  = "/etc/tether"
)

// Dirs are the directories systemd created for the unit (StateDirectory=,
// RuntimeDirectory=, ConfigurationDirectory=, LoadCredential=).
type Dirs struct {
	State         string // $STATE_DIRECTORY or DefaultStateDir
	Runtime       string // $RUNTIME_DIRECTORY or DefaultRuntimeDir
	Configuration string // $CONFIGURATION_DIRECTORY or DefaultConfigDir
	Credentials   string // $CREDENTIALS_DIRECTORY; empty outside systemd
}

// Directories reads the directories from the process environment.
func Directories() Dirs { return DirectoriesFrom(os.Getenv) }

// DirectoriesFrom reads the directories through getenv. systemd joins several
// directories of one kind with ':'; tether's units declare one, so the first
// is used.
func DirectoriesFrom(getenv func(string) string) Dirs {
	first := func(key, def string) string {
		v, _, _ := strings.Cut(getenv(key), ":")
		if v == "" {
			return def
		}
		return v
	}
	return Dirs{
		State:         first("STATE_DIRECTORY", DefaultStateDir),
		Runtime:       first("RUNTIME_DIRECTORY", DefaultRuntimeDir),
		Configuration: first("CONFIGURATION_DIRECTORY", DefaultConfigDir),
		Credentials:   first("CREDENTIALS_DIRECTORY", ""),
	}
}

// Credential returns the path of the systemd credential name (LoadCredential=
// or ImportCredential=) and whether it exists. Names with a path separator
// are refused: a credential name is one file in the directory.
func (d Dirs) Credential(name string) (string, bool) {
	if d.Credentials == "" || name == "" || strings.ContainsRune(name, '/') || name == "." || name == ".." {
		return "", false
	}
	p := filepath.Join(d.Credentials, name)
	fi, err := os.Stat(p)
	if err != nil || !fi.Mode().IsRegular() {
		return "", false
	}
	return p, true
}
