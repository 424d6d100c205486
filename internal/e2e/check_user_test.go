package e2e

import (
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/monibahmed/nixos-config/internal/testutil"
)

// asNobody prepares a copy of the repository and the mage binary that the
// user nobody can use, and returns a command line running mage as nobody.
func asNobody(t *testing.T) (dir string, argv []string) {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireTools(t, "runuser", "unshare")
	u, err := user.Lookup("nobody")
	testutil.Require(t, err == nil, "a user nobody: %v", err)
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	dir = testutil.CopyRepo(t)
	home := t.TempDir()
	bin := filepath.Join(t.TempDir(), "mage")
	data, err := os.ReadFile(testutil.MageBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{dir, home, filepath.Dir(bin)} {
		// t.TempDir's parents are root's and private: open the way.
		for p := d; p != os.TempDir() && p != "/"; p = filepath.Dir(p) {
			if err := os.Chmod(p, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, d := range []string{dir, home} {
		if err := filepath.Walk(d, func(p string, _ os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(p, uid, gid)
		}); err != nil {
			t.Fatal(err)
		}
	}
	return dir, []string{"runuser", "-u", "nobody", "--", "env", "HOME=" + home, "PATH=" + os.Getenv("PATH"), bin}
}

// `mage check -offline` as a user who is not root: parsing needs no store
// (stage 1 passes), and when Nix itself cannot run for this user, the error
// says so and how to fix it, never "parse error" or "fix the syntax".
func TestCheckOfflineAsUserNamesNixProblems(t *testing.T) {
	requireNix(t)
	dir, argv := asNobody(t)
	for _, c := range []struct {
		name  string
		setup string // shell run as root in a private mount namespace first
		wants []string
	}{
		// This machine's store is root's; as root Nix runs without a daemon.
		{"no daemon", "", []string{"cannot write the Nix store", "run as root"}},
		// A daemon socket only root may open (Debian's nix-setup-systemd
		// gives it to the nix-users group).
		{"daemon socket for root only",
			// (A tmpfs over the state directory, in this test's mount
			// namespace only: the machine's /nix is not touched.)
			"mount -t tmpfs -o mode=0755 nixstate /nix/var/nix && mkdir -m 0700 /nix/var/nix/daemon-socket && : > /nix/var/nix/daemon-socket/socket",
			[]string{"may not use the Nix daemon", "nix-users", "run as root"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			script := c.setup
			if script != "" {
				script += " && "
			}
			script += `exec "$@"`
			cmd := exec.Command("unshare", append([]string{"--mount", "--propagation", "private", "--", "sh", "-c", script, "sh"}, append(argv, "check", "-offline")...)...)
			cmd.Dir = dir
			var so, se strings.Builder
			cmd.Stdout, cmd.Stderr = &so, &se
			err := cmd.Run()
			r := testutil.Result{Stdout: so.String(), Stderr: se.String()}
			if ee, ok := err.(*exec.ExitError); ok {
				r.Code = ee.ExitCode()
			}
			if !strings.Contains(r.Stdout, "check 1/4 parse: ok") {
				t.Errorf("parsing must work without root and without a store:\n%s", r.Combined())
			}
			line := testutil.ErrorLine(r)
			t.Log(line)
			if r.Code == 0 || line == "" {
				t.Fatalf("expected one error line, exit %d:\n%s", r.Code, r.Combined())
			}
			if !strings.Contains(line, "stage 3/4") || !strings.Contains(line, "nix-on-this-machine") {
				t.Errorf("error line %q", line)
			}
			for _, w := range c.wants {
				if !strings.Contains(line, w) {
					t.Errorf("error line %q lacks %q", line, w)
				}
			}
			for _, bad := range []string{"parse error", ":0:0", "fix the syntax", "fix the expression"} {
				if strings.Contains(r.Combined(), bad) {
					t.Errorf("output says %q:\n%s", bad, r.Combined())
				}
			}
		})
	}
}
