package run

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestOutputAndExitError(t *testing.T) {
	ctx := context.Background()
	out, err := Output(ctx, Exec{}, Cmd{Name: "sh", Args: []string{"-c", "echo hello; echo oops >&2"}})
	if err != nil || out != "hello\n" {
		t.Fatalf("out=%q err=%v", out, err)
	}
	_, err = Output(ctx, Exec{}, Cmd{Name: "sh", Args: []string{"-c", "echo broken >&2; exit 3"}})
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Code != 3 || !strings.Contains(ee.Stderr, "broken") {
		t.Fatalf("want exit 3 with stderr, got %#v", err)
	}
}

func TestCancelKillsProcessGroup(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	// The grandchild sleep would keep the pipe open if only the shell were killed.
	err := Exec{WaitDelay: time.Second}.Run(ctx, Cmd{Name: "sh", Args: []string{"-c", "sleep 31.7 & sleep 31.7; wait"}})
	if err == nil {
		t.Fatal("expected an error from a cancelled command")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("cancel took %v", d)
	}
	time.Sleep(100 * time.Millisecond)
	// Both sleeps were in the command's process group: none may survive.
	// (pgrep exits 1 when nothing matches; any other failure means the
	// check itself did not work.)
	out, err := exec.Command("pgrep", "-f", "^sleep 31.7$").Output()
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 1) {
		t.Fatalf("pgrep: %v", err)
	}
	if len(out) > 0 {
		t.Fatalf("processes of the cancelled group survived: %s", out)
	}
}

func TestQuote(t *testing.T) {
	cases := map[string]string{
		"":             "''",
		"plain-word_1": "plain-word_1",
		"a b":          "'a b'",
		"it's":         `'it'"'"'s'`,
		"lab;rm -rf /": "'lab;rm -rf /'",
		"$(id)":        "'$(id)'",
	}
	for in, want := range cases {
		if got := Quote(in); got != want {
			t.Errorf("Quote(%q) = %q, want %q", in, got, want)
		}
		// The shell must read it back as the same single word.
		out, err := exec.Command("sh", "-c", "printf %s "+Quote(in)).Output()
		if err != nil || string(out) != in {
			t.Errorf("sh round trip of %q gave %q (%v)", in, out, err)
		}
	}
}
