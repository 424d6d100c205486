package e2e

import (
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"github.com/monibahmed/nixos-config/internal/deploy"
)

// mage exec against the three lab targets: each one's output prefixed
// with its name, a summary of exit statuses, non-zero when one fails.
func TestExecOnThreeTargets(t *testing.T) {
	f := newFixture(t)
	// Output on both streams, and an escape sequence a hostile machine
	// could send (a window title, a screen clear, a carriage return).
	r := f.mage("exec", "*", `echo "out $(hostname)"; echo "err $(hostname)" >&2; printf '\033]0;pwned\007\033[2J\rx\n'`, "-lab")
	succeeds(t, r)
	for _, h := range fleetNames {
		if !regexp.MustCompile(`(?m)^` + h + ` *\| out ` + h + `$`).MatchString(r.Stdout) {
			t.Errorf("no stdout line of %s:\n%s", h, r.Stdout)
		}
		if !regexp.MustCompile(`(?m)^` + h + ` *\| err ` + h + `$`).MatchString(r.Stderr) {
			t.Errorf("no stderr line of %s:\n%s", h, r.Stderr)
		}
		if !regexp.MustCompile(h + `\s+10\.77\.50\.\d+\s+ok\s+0\s`).MatchString(r.Stdout) {
			t.Errorf("no summary row for %s:\n%s", h, r.Stdout)
		}
	}
	if strings.Contains(r.Stdout, "\x1b") || strings.Contains(r.Stdout, "\r") || !strings.Contains(r.Stdout, `\x1b]0;pwned\a\x1b[2J\rx`) {
		t.Errorf("the escape sequences were not neutralised:\n%q", r.Stdout)
	}

	// One target fails: every output and the summary, exit status non-zero.
	r = f.mage("exec", "@lab", `hostname; test "$(hostname)" != media-center`, "-lab")
	failsWith(t, r, "exec: 1 of 3 targets failed: media-center (exit 1)")
	for _, h := range fleetNames {
		if !regexp.MustCompile(`(?m)^` + h + ` *\| ` + h + `$`).MatchString(r.Stdout) {
			t.Errorf("no output of %s:\n%s", h, r.Stdout)
		}
	}
	if !regexp.MustCompile(`media-center\s+10\.77\.50\.12\s+failed\s+1\s`).MatchString(r.Stdout) || !regexp.MustCompile(`lab-server\s+10\.77\.50\.11\s+ok\s+0\s`).MatchString(r.Stdout) {
		t.Errorf("summary:\n%s", r.Stdout)
	}

	// -json: the same as data.
	r = f.mage("exec", "lab-server,media-center", "hostname; exit 3", "-lab", "-json")
	if r.Code == 0 {
		t.Fatalf("exit 0 although the command failed:\n%s", r.Combined())
	}
	var res []deploy.ExecResult
	if err := json.Unmarshal([]byte(r.Stdout), &res); err != nil || len(res) != 2 {
		t.Fatalf("-json: %v\n%s", err, r.Stdout)
	}
	if res[0].Target != "lab-server" || res[0].Stdout != "lab-server\n" || res[0].ExitCode != 3 || res[1].Stdout != "media-center\n" {
		t.Errorf("-json: %+v", res)
	}

	// mage has no "--": the command is one argument, and saying so helps.
	failsWith(t, f.mage("exec", "@lab", "--", "hostname", "-lab"), "give the command as one quoted argument")
}

// -sudo: as root, with the password handling of deploys; an unreachable
// target is reported with its cause and does not hold the others.
func TestExecSudoAndUnreachable(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	const pw = "Exec-pw-on-stdin-81c2"
	if err := f.lab.RequireSudoPassword(ctx, "lab-server", pw); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.lab.PasswordlessSudo(ctx, "lab-server") })
	r := f.mageStdin(pw+"\n", "exec", "lab-server,media-center", "id -u", "-sudo", "-asksudo", "-lab")
	succeeds(t, r)
	for _, h := range []string{"lab-server", "media-center"} {
		if !regexp.MustCompile(`(?m)^` + h + ` *\| 0$`).MatchString(r.Stdout) {
			t.Errorf("%s did not run as root:\n%s", h, r.Stdout)
		}
	}
	if strings.Contains(r.Stdout+r.Stderr, pw) {
		t.Fatal("the password appears in the output")
	}
	// Without a terminal and without -asksudo: the cause and remedy.
	r = f.mage("exec", "lab-server", "id -u", "-sudo", "-lab")
	failsWith(t, r, "lab-server (did not run)")
	if !strings.Contains(r.Stdout, "needs a password and there is no terminal") || !strings.Contains(r.Stdout, "-asksudo") {
		t.Errorf("no cause and remedy:\n%s", r.Stdout)
	}

	if err := f.lab.StopSSHD(ctx, "dev-workstation"); err != nil {
		t.Fatal(err)
	}
	defer f.lab.StartSSHD(ctx, "dev-workstation")
	r = f.mage("exec", "*", "hostname", "-lab", "-timeout=3s")
	failsWith(t, r, "exec: 1 of 3 targets failed: dev-workstation (did not run)")
	if !regexp.MustCompile(`dev-workstation\s+10\.77\.50\.10\s+did not run\s+-\s`).MatchString(r.Stdout) ||
		!strings.Contains(r.Stdout, "dev-workstation: exec: connection refused") || !strings.Contains(r.Stdout, "lab-server      | lab-server") {
		t.Errorf("summary:\n%s", r.Stdout)
	}
}
