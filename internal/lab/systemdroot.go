package lab

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/monibahmed/nixos-config/internal/run"
	"github.com/monibahmed/nixos-config/internal/trouble"
)

//go:embed scripts/systemd-root.sh
var systemdRootScript string

// DefaultDebianMirror is where the base root of systemd hosts comes from
// when this machine's apt uses no Debian mirror of its own.
const DefaultDebianMirror = "http://deb.debian.org/debian"

// DebianMirror is the Debian mirror this machine's apt uses (the first
// ".../debian" URI of its sources), or DefaultDebianMirror.
func DebianMirror() string {
	var texts []string
	texts = append(texts, readFileString("/etc/apt/sources.list"))
	if files, _ := filepath.Glob("/etc/apt/sources.list.d/*"); len(files) > 0 {
		for _, f := range files {
			texts = append(texts, readFileString(f))
		}
	}
	if m := debianMirror(texts); m != "" {
		return m
	}
	return DefaultDebianMirror
}

// debianMirror finds a Debian archive URI in apt sources (one-line or
// deb822 format).
func debianMirror(sources []string) string {
	for _, text := range sources {
		for _, line := range strings.Split(text, "\n") {
			f := strings.Fields(line)
			var uris []string
			switch {
			case len(f) >= 2 && f[0] == "URIs:":
				uris = f[1:]
			case len(f) >= 3 && f[0] == "deb":
				for _, x := range f[1:] {
					if !strings.HasPrefix(x, "[") && !strings.HasSuffix(x, "]") && strings.Contains(x, "://") {
						uris = append(uris, x)
						break
					}
				}
			}
			for _, u := range uris {
				u = strings.TrimRight(u, "/")
				if (strings.HasPrefix(u, "http://") || strings.HasPrefix(u, "https://")) && strings.HasSuffix(u, "/debian") {
					return u
				}
			}
		}
	}
	return ""
}

// systemdRootPackages are installed into the base root of systemd hosts
// (on top of Debian's minbase): systemd as PID 1 with D-Bus, sshd, sudo,
// Nix of the same Debian release as this machine, and what the deploy's
// preflight and the test double's switch-to-configuration run (flock,
// readlink, df, awk, hostname, ip).
var systemdRootPackages = []string{
	"systemd", "systemd-sysv", "dbus", "openssh-server", "sudo", "iproute2",
	"nix-bin", "util-linux", "procps", "hostname",
}

// SystemdPackages are the Debian packages this machine needs for systemd
// lab hosts: systemd-nspawn boots them, mmdebstrap builds their root.
var SystemdPackages = []string{"systemd-container", "mmdebstrap"}

// DefaultRootCache is where base roots are kept between labs: the user's
// cache directory (like Go's build cache), e.g. /root/.cache/nixos-config/lab.
func DefaultRootCache() (string, error) {
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("no cache directory for the systemd hosts' root (set HOME or XDG_CACHE_HOME): %w", err)
	}
	return filepath.Join(d, "nixos-config", "lab"), nil
}

// DebianSuite is the Debian release of systemd hosts: this machine's own
// (so that the hosts run the same Nix), "sid" on Debian unstable, and
// "stable" on machines that are not Debian.
func DebianSuite() string {
	return debianSuite(readFileString("/etc/os-release"), readFileString("/etc/debian_version"))
}

func debianSuite(osRelease, debianVersion string) string {
	vals := map[string]string{}
	for _, line := range strings.Split(osRelease, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok {
			vals[k] = strings.Trim(v, `"'`)
		}
	}
	if vals["ID"] != "debian" {
		return "stable"
	}
	if strings.Contains(debianVersion, "sid") {
		return "sid"
	}
	if c := vals["VERSION_CODENAME"]; validSuite(c) {
		return c
	}
	return "stable"
}

func validSuite(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}

func readFileString(path string) string {
	data, _ := os.ReadFile(path)
	return string(data)
}

// rootKey names a base root by what goes into it (not by the mirror it came
// from), so that a changed package list or set-up script never reuses an
// old root.
func rootKey(suite string) string {
	h := sha256.New()
	fmt.Fprintf(h, "v1\n%s\n%s\n%s", suite, strings.Join(systemdRootPackages, ","), systemdRootScript)
	return "debian-" + suite + "-" + hex.EncodeToString(h.Sum(nil))[:12]
}

// RootDir is the base root of systemd hosts for suite in cache (it exists
// once built).
func RootDir(cache, suite string) string {
	return filepath.Join(cache, rootKey(suite), "root")
}

// SystemdRootReady reports whether cache holds a built base root for suite.
func SystemdRootReady(cache, suite string) bool {
	_, err := os.Stat(filepath.Join(RootDir(cache, suite), "etc", "os-release"))
	return err == nil
}

// ErrSystemdPrerequisites: this machine lacks what systemd hosts need.
type ErrSystemdPrerequisites struct{ Missing []string }

func (e *ErrSystemdPrerequisites) Error() string {
	return fmt.Sprintf("systemd lab hosts need %s: on Debian run `apt-get install --no-install-recommends %s` as root (%s)",
		strings.Join(e.Missing, ", "), strings.Join(SystemdPackages, " "), trouble.See(trouble.Lab))
}

// SystemdPrerequisites lists what systemd hosts need and this machine
// lacks; mmdebstrap only when the base root is not built yet.
func SystemdPrerequisites(rootReady bool) []string {
	var missing []string
	bins := []string{"systemd-nspawn"}
	if !rootReady {
		bins = append(bins, "mmdebstrap")
	}
	for _, b := range bins {
		if _, err := lookPath(b); err != nil {
			missing = append(missing, b)
		}
	}
	return missing
}

// EnsureSystemdRoot returns the base root of systemd hosts for suite,
// building it in cache with mmdebstrap when it is not there yet (about 20 s
// and 300 MB; it needs the Debian mirror). Concurrent callers (labs of
// other test processes) wait for one build. notice, when not nil, is told
// before a build starts.
func EnsureSystemdRoot(ctx context.Context, r run.Runner, cache, suite string, notice func(string)) (string, error) {
	if !validSuite(suite) {
		return "", fmt.Errorf("invalid Debian release %q: a name such as bookworm, trixie or sid", suite)
	}
	root := RootDir(cache, suite)
	if SystemdRootReady(cache, suite) {
		return root, nil
	}
	if m := SystemdPrerequisites(false); len(m) > 0 {
		return "", &ErrSystemdPrerequisites{Missing: m}
	}
	dir := filepath.Dir(root)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	unlock, err := lockFile(ctx, dir+".lock")
	if err != nil {
		return "", err
	}
	defer unlock()
	if SystemdRootReady(cache, suite) {
		return root, nil // built by another process meanwhile
	}
	mirror := DebianMirror()
	if notice != nil {
		notice(fmt.Sprintf("building the Debian %s root of systemd lab hosts in %s (once: about 30 s and 300 MB from %s)", suite, dir, mirror))
	}
	tmp := root + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return "", err
	}
	_ = os.RemoveAll(root) // an incomplete root without os-release
	hook := filepath.Join(dir, "customize.sh")
	if err := os.WriteFile(hook, []byte(systemdRootScript), 0o755); err != nil {
		return "", err
	}
	logPath := filepath.Join(dir, "build.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return "", err
	}
	defer logf.Close()
	args := []string{
		"--variant=minbase",
		"--include=" + strings.Join(systemdRootPackages, ","),
		// A frozen mirror snapshot has an "expired" Release file.
		`--aptopt=Acquire::Check-Valid-Until "false"`,
		"--customize-hook=/bin/sh " + run.Quote(hook) + ` "$1"`,
		suite, tmp, mirror,
	}
	bctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	if err := r.Run(bctx, run.Cmd{Name: "mmdebstrap", Args: args, Stdout: logf, Stderr: logf}); err != nil {
		_ = os.RemoveAll(tmp)
		return "", fmt.Errorf("building the root of systemd lab hosts failed (mmdebstrap needs the Debian mirror %s; build it once while the mirror is reachable: `mage lab:root`): %s (log: %s)",
			mirror, tailFile(logPath, 3), logPath)
	}
	if err := os.Rename(tmp, root); err != nil {
		return "", err
	}
	if !SystemdRootReady(cache, suite) {
		return "", fmt.Errorf("mmdebstrap built %s without etc/os-release (log: %s)", root, logPath)
	}
	return root, nil
}

// lockFile takes an exclusive flock on path, waiting for other holders
// until ctx ends.
func lockFile(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
				f.Close()
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
