package run

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// PrivateDir creates a directory only this user can enter (0700), named
// <prefix>-<pid>-<random>, for sockets and links other programs are given
// by path. It lives in $TMPDIR when that path is short and has no
// character that needs quoting in a URL or a socket address, else in /tmp.
// Directories of the same prefix whose process is gone (a killed run) are
// removed first, so nothing piles up.
func PrivateDir(prefix string) (string, error) {
	base := os.TempDir()
	if len(base) > 60 || strings.ContainsAny(base, " ?#%&+;=\"'\\\n\t[]") {
		base = "/tmp"
	}
	reapPrivateDirs(base, prefix)
	dir, err := os.MkdirTemp(base, prefix+"-"+strconv.Itoa(os.Getpid())+"-")
	if err != nil {
		return "", fmt.Errorf("creating a private directory: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	return dir, nil
}

// reapPrivateDirs removes this user's directories of prefix whose process
// no longer runs.
func reapPrivateDirs(base, prefix string) {
	entries, err := os.ReadDir(base)
	if err != nil {
		return
	}
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), prefix+"-")
		if !ok || !e.IsDir() {
			continue
		}
		pidText, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid <= 0 || pid == os.Getpid() {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue
		}
		if st, ok := info.Sys().(*syscall.Stat_t); !ok || int(st.Uid) != os.Geteuid() {
			continue
		}
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			continue // alive, or not ours to judge
		}
		_ = os.RemoveAll(filepath.Join(base, e.Name()))
	}
}
