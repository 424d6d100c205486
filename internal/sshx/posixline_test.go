package sshx

import (
	"os"
	"os/exec"
	"testing"

	"github.com/monibahmed/nixos-config/internal/run"
)

// PosixLine means the same to every login shell sshd may run it with:
// a command printing its arguments prints them unchanged under sh, bash
// and fish (when installed; CI installs fish), and unwrapPosixLine (the
// test server's) reads back the line.
func TestPosixLineSameInEveryShell(t *testing.T) {
	args := []string{
		"plain", "", "it's", `back\slash`, `two\\back`, `\'`, `'\''`, `"dq"`, "$HOME", "$(id)", "`id`",
		"a b\tc", "line\nbreak", "semi;colon", "glob*?[a]", "~user", "%self", "{a,b}", "#hash", "!bang",
		"\xff\xfe not utf-8", "end\\",
	}
	line := "printf '<%s>' " + run.ShellJoin(args...)
	want := ""
	for _, a := range args {
		want += "<" + a + ">"
	}
	if got := unwrapPosixLine(PosixLine(line)); got != line {
		t.Fatalf("unwrap: %q, want %q", got, line)
	}
	shells := []string{"sh", "bash", "fish"}
	for _, sh := range shells {
		path, err := exec.LookPath(sh)
		if err != nil {
			if sh == "fish" && os.Getenv("CI") != "true" {
				t.Logf("fish is not installed: not tried")
				continue
			}
			t.Fatalf("%s: %v", sh, err)
		}
		cmd := exec.Command(path, "-c", PosixLine(line))
		cmd.Env = append(os.Environ(), "HOME=/nonexistent")
		out, err := cmd.CombinedOutput()
		if err != nil || string(out) != want {
			t.Errorf("%s: %v\n got %q\nwant %q", sh, err, out, want)
		}
	}
}
