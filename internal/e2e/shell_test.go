package e2e

import (
	"regexp"
	"strings"
	"testing"

	"github.com/monibahmed/nixos-config/internal/testutil"
)

// setLoginShell gives the deploy user of a lab host another login shell
// for the test (sshd runs every command through it). /etc/passwd is a
// file mounted into the host: rewritten in place.
func setLoginShell(t *testing.T, f *fixture, host, shell string) {
	t.Helper()
	set := func(from, to string) {
		f.exec(host, `p=$(sed 's#^\(monibahmed:.*:\)`+from+`$#\1`+to+`#' /etc/passwd) && printf '%s\n' "$p" > /etc/passwd`)
	}
	set("/bin/bash", shell)
	t.Cleanup(func() { set(shell, "/bin/bash") })
	if got := f.exec(host, "getent passwd monibahmed | cut -d: -f7"); got != shell {
		t.Fatalf("login shell %q, want %q", got, shell)
	}
}

// A deploy user whose login shell is fish (a common NixOS choice:
// users.users.<name>.shell = pkgs.fish). sshd runs each command through the
// login shell, and fish is no POSIX shell: deployments, status, exec and a
// rollback work as they do for bash.
func TestFishLoginShell(t *testing.T) {
	testutil.RequireTools(t, "fish")
	f := newFixture(t)
	const host = "dev-workstation"
	setLoginShell(t, f, host, "/usr/bin/fish")
	succeeds(t, f.mage("deploy", host, "-", "-lab"))
	first := f.current(host)
	f.setConfig(host, `environment.etc."fish-test".text = "`+unique()+`";`)
	f.commit("next")
	succeeds(t, f.mage("deploy", host, "-", "-lab"))
	if f.generation(host) != 2 {
		t.Fatalf("generation %d after two deployments", f.generation(host))
	}
	r := f.mage("status", "-lab")
	succeeds(t, r)
	// discover's probe logs in through the same login shell.
	r = f.mage("discover:subnet", "10.77.50.0/24", "-lab")
	succeeds(t, r)
	if !regexp.MustCompile(`10\.77\.50\.10\s+dev-workstation\s+dev-workstation \(by address\)\s+known\s+SHA256:\S+\s+yes, gen 2`).MatchString(r.Stdout) {
		t.Errorf("discover did not read the host through fish:\n%s", r.Stdout)
	}
	// The command is POSIX sh, whatever the login shell.
	r = f.mage("exec", host, `printf '<%s>' "a'b\\c" '$HOME'; echo " $((6*7))"`, "-lab")
	succeeds(t, r)
	if !strings.Contains(r.Stdout, `<a'b\c><$HOME> 42`) {
		t.Errorf("exec through fish changed the arguments:\n%s", r.Stdout)
	}
	succeeds(t, f.mage("rollback", host, "-", "-lab"))
	if f.current(host) != first {
		t.Fatalf("rollback: current %s, want %s", f.current(host), first)
	}
}

// A login shell that does not run the command it is given (here one that
// runs nothing and succeeds) is named as the cause, not a bad host name.
func TestLoginShellThatRunsNothing(t *testing.T) {
	f := newFixture(t)
	const host = "dev-workstation"
	setLoginShell(t, f, host, "/bin/true")
	r := f.mage("deploy", host, "-", "-lab")
	failsWith(t, r, host+": preflight: the preflight probe did not run on the target", "monibahmed's login shell", "fish work")
	if strings.Contains(r.Combined(), "host name") || f.generation(host) != 0 {
		t.Fatalf("wrong cause, or activated:\n%s", r.Combined())
	}
}
