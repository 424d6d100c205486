package setup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/monibahmed/nixos-config/internal/run"
)

// fakeApt plays apt-get and dpkg-query on a directory tree: installing
// creates the commands and enables services the way Debian's openssh-server,
// sudo and procps do (links measured in fresh bookworm and sid roots).
type fakeApt struct {
	root       string
	installed  map[string]bool // commands present
	calls      []string
	policySeen []bool // policy-rc.d present at each apt-get install
	unknown    bool   // first install fails like apt without package lists
}

func (f *fakeApt) Run(ctx context.Context, c run.Cmd) error {
	f.calls = append(f.calls, c.Name+" "+strings.Join(c.Args, " "))
	switch {
	case c.Name == "dpkg-query":
		fmt.Fprintln(c.Stdout, "git installed")
		return nil
	case c.Name == "apt-get" && c.Args[0] == "update":
		f.unknown = false
		return nil
	case c.Name == "apt-get" && c.Args[0] == "install":
		_, err := os.Stat(filepath.Join(f.root, "usr/sbin/policy-rc.d"))
		f.policySeen = append(f.policySeen, err == nil)
		if f.unknown {
			return &run.ExitError{Cmd: "apt-get install", Code: 100, Stderr: "E: Unable to locate package nix-bin\n"}
		}
		for _, t := range Tools() {
			f.installed[t.Command] = true
		}
		for link, target := range map[string]string{
			"etc/systemd/system/multi-user.target.wants/ssh.service": "/lib/systemd/system/ssh.service",
			"etc/systemd/system/sshd.service":                        "/lib/systemd/system/ssh.service",
			"etc/rc2.d/S01ssh":                                       "../init.d/ssh",
			"etc/rcS.d/S01procps":                                    "../init.d/procps",
		} {
			p := filepath.Join(f.root, link)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			if err := os.Symlink(target, p); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("unexpected command %s", c.Name)
}

func newFake(t *testing.T) (*fakeApt, *Installer, *[]string) {
	root := t.TempDir()
	for _, d := range []string{"usr/sbin", "etc/ssh", "etc/systemd/system/multi-user.target.wants", "etc/rc2.d"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Enabled before: stays enabled.
	if err := os.Symlink("/lib/systemd/system/cron.service", filepath.Join(root, "etc/systemd/system/multi-user.target.wants/cron.service")); err != nil {
		t.Fatal(err)
	}
	f := &fakeApt{root: root, installed: map[string]bool{"git": true, "apt-get": true, "dpkg-query": true}}
	var notices []string
	in := &Installer{Runner: f, Root: root, Euid: func() int { return 0 },
		Look:   func(c string) bool { return f.installed[c] },
		Notice: func(format string, a ...any) { notices = append(notices, fmt.Sprintf(format, a...)) }}
	return f, in, &notices
}

func TestEnsureInstallsWithoutEnablingServices(t *testing.T) {
	f, in, notices := newFake(t)
	pkgs, err := in.Ensure(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, p := range Packages() {
		if p != "git" {
			want = append(want, p)
		}
	}
	if strings.Join(pkgs, " ") != strings.Join(want, " ") {
		t.Fatalf("installed %v, want %v", pkgs, want)
	}
	if contains(pkgs, "git") {
		t.Errorf("git was present and must not be installed: %v", pkgs)
	}
	if len(f.policySeen) != 1 || !f.policySeen[0] {
		t.Errorf("policy-rc.d must forbid starting services during apt-get: %v", f.policySeen)
	}
	if _, err := os.Lstat(filepath.Join(f.root, "usr/sbin/policy-rc.d")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("policy-rc.d left behind: %v", err)
	}
	for _, gone := range []string{"etc/systemd/system/multi-user.target.wants/ssh.service", "etc/systemd/system/sshd.service", "etc/rc2.d/S01ssh", "etc/rcS.d/S01procps"} {
		if _, err := os.Lstat(filepath.Join(f.root, gone)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is still enabled", gone)
		}
	}
	if _, err := os.Lstat(filepath.Join(f.root, "etc/systemd/system/multi-user.target.wants/cron.service")); err != nil {
		t.Errorf("a service enabled before the installation was touched: %v", err)
	}
	if _, err := os.Stat(filepath.Join(f.root, "etc/ssh/sshd_not_to_be_run")); err != nil {
		t.Errorf("a newly installed sshd must be marked not to be run: %v", err)
	}
	if len(*notices) < 2 || !strings.Contains((*notices)[0], "nix-bin") || !strings.Contains((*notices)[0], "openssh-server") || !strings.Contains((*notices)[1], "ssh.service") {
		t.Errorf("notices: %q", *notices)
	}
	// Second run: nothing missing, nothing done.
	f.calls = nil
	if pkgs, err := in.Ensure(context.Background()); err != nil || pkgs != nil || len(f.calls) != 0 {
		t.Errorf("second run: %v %v %v", pkgs, err, f.calls)
	}
}

func TestEnsureUpdatesPackageListsOnce(t *testing.T) {
	f, in, _ := newFake(t)
	f.unknown = true
	if _, err := in.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	var apt []string
	for _, c := range f.calls {
		if strings.HasPrefix(c, "apt-get") {
			apt = append(apt, strings.Fields(c)[1])
		}
	}
	if strings.Join(apt, ",") != "install,update,install" {
		t.Fatalf("apt-get calls: %v", apt)
	}
}

func TestEnsureKeepsTheAdministratorsPolicy(t *testing.T) {
	f, in, _ := newFake(t)
	own := filepath.Join(f.root, "usr/sbin/policy-rc.d")
	if err := os.WriteFile(own, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := in.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(own); err != nil || string(data) != "#!/bin/sh\nexit 0\n" {
		t.Fatalf("the administrator's policy-rc.d changed: %q %v", data, err)
	}
}

func TestEnsureSaysWhatToInstallWhenItCannot(t *testing.T) {
	f, in, _ := newFake(t)
	in.Euid = func() int { return 1000 }
	_, err := in.Ensure(context.Background())
	var m *ErrManual
	if !errors.As(err, &m) || !strings.Contains(err.Error(), "apt-get install --no-install-recommends") || !strings.Contains(err.Error(), "nix-bin") || !strings.Contains(err.Error(), "root") {
		t.Fatalf("non-root: %v", err)
	}
	in.Euid = func() int { return 0 }
	delete(f.installed, "apt-get")
	_, err = in.Ensure(context.Background())
	if !errors.As(err, &m) || !strings.Contains(err.Error(), "not a Debian/Ubuntu system") || !strings.Contains(err.Error(), "package manager") {
		t.Fatalf("no apt: %v", err)
	}
	if len(f.calls) != 0 {
		t.Fatalf("ran %v", f.calls)
	}
}

func TestPackagesCoverTheLab(t *testing.T) {
	cmds := map[string]bool{}
	for _, tl := range Tools() {
		cmds[tl.Command] = true
	}
	// What the lab checks for (internal/lab.Prerequisites) and the tests run.
	for _, c := range []string{"ip", "unshare", "nsenter", "mount", "ssh-keygen", "/usr/sbin/sshd", "ssh", "nix", "nix-daemon", "sudo", "openssl", "tc", "nft", "nmap", "script", "pgrep", "git", "nix-store", "nix-instantiate", "ssh-keyscan", "flock", "setsid", "runuser"} {
		if !cmds[c] {
			t.Errorf("packages.txt lacks %s", c)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
