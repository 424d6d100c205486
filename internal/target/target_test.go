package target_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/monibahmed/nixos-config/internal/target"
	"github.com/monibahmed/nixos-config/internal/target/targettest"
	"github.com/monibahmed/nixos-config/internal/trouble"
)

type pw struct {
	value    string
	asked    int
	rejected int
}

func (p *pw) Password(context.Context) (string, error) {
	p.asked++
	if p.value == "" {
		return "", target.ErrNoPrompt
	}
	return p.value, nil
}
func (p *pw) Rejected() { p.rejected++ }

func session(t *targettest.Target, p target.Password) *target.Session {
	if t.User == "" {
		t.User = "monibahmed"
	}
	return target.New("lab-server", t.User, t.Conn(), p, target.Limits{})
}

// The password reaches sudo's prompt only when sudo asks, and never the
// command's input, whatever the policy.
func TestSudoPasswordOnlyAtPrompt(t *testing.T) {
	ctx := context.Background()
	// Passwordless (cached credentials, NOPASSWD): the password is known
	// but never sent.
	ft := &targettest.Target{Hostname: "lab-server"}
	p := &pw{value: "s3cret"}
	s := session(ft, p)
	if err := s.AppendHistory(ctx, target.Entry{ID: "x", Kind: "deploy"}); err != nil {
		t.Fatal(err)
	}
	if p.asked != 0 || len(ft.Passwords) != 0 || strings.Contains(strings.Join(ft.CommandIn, ""), "s3cret") {
		t.Fatalf("passwordless sudo got the password: asked %d, prompts %v, input %q", p.asked, ft.Passwords, ft.CommandIn)
	}
	// A password: asked once, given to the prompt only.
	ft = &targettest.Target{Hostname: "lab-server", SudoPassword: "s3cret"}
	p = &pw{value: "s3cret"}
	s = session(ft, p)
	for i := 0; i < 2; i++ {
		if err := s.AppendHistory(ctx, target.Entry{ID: "y", Kind: "deploy"}); err != nil {
			t.Fatal(err)
		}
	}
	if len(ft.Passwords) != 2 || ft.Passwords[0] != "s3cret" {
		t.Fatalf("prompts: %v", ft.Passwords)
	}
	for _, in := range ft.CommandIn {
		if strings.Contains(in, "s3cret") {
			t.Fatalf("the password became command input: %q", in)
		}
	}
	if len(ft.History) != 2 || strings.Contains(strings.Join(ft.History, ""), "s3cret") {
		t.Fatalf("history: %v", ft.History)
	}
	// A wrong password: rejected after the second prompt, reported once.
	ft = &targettest.Target{Hostname: "lab-server", SudoPassword: "right"}
	p = &pw{value: "wrong"}
	_, err := session(ft, p).RunRoot(ctx, target.Root{Name: "x", Args: []string{"true"}})
	var te *target.Error
	if !errors.As(err, &te) || !strings.Contains(te.Cause, "rejected the password") || p.rejected != 1 {
		t.Fatalf("wrong password: %v (rejected %d)", err, p.rejected)
	}
	// No terminal to ask: a clear error, nothing sent.
	ft = &targettest.Target{Hostname: "lab-server", SudoPassword: "right"}
	_, err = session(ft, &pw{}).RunRoot(ctx, target.Root{Name: "x", Args: []string{"true"}})
	if !errors.As(err, &te) || !strings.Contains(te.Cause, "needs a password and there is no terminal") || len(ft.Passwords) != 0 {
		t.Fatalf("no prompt: %v %v", err, ft.Passwords)
	}
	// Not allowed: the cause and the wheel remedy.
	ft = &targettest.Target{Hostname: "lab-server", NoSudo: true}
	_, err = session(ft, &pw{}).RunRoot(ctx, target.Root{Name: "x", Args: []string{"true"}})
	if !errors.As(err, &te) || !strings.Contains(te.Cause, "may not use sudo") || !strings.Contains(te.Remedy, "wheel") {
		t.Fatalf("no sudo: %v", err)
	}
}

// A connection lost while sudo starts is a network failure, not sudo's.
func TestSudoLostConnectionIsNotSudo(t *testing.T) {
	ft := &targettest.Target{Hostname: "lab-server", LostAtSudo: true}
	_, err := session(ft, &pw{}).RunRoot(context.Background(), target.Root{Name: "x", Args: []string{"true"}})
	var te *target.Error
	if !errors.As(err, &te) || te.Section != trouble.Network || strings.Contains(te.Cause, "sudo on") || !strings.Contains(te.Cause, "lost") {
		t.Fatalf("lost connection: %v", err)
	}
}

func TestStateValidation(t *testing.T) {
	good := "current=/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-x\nprofile=system-3-link\nprofilepath=/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-x\nfree=2048\n"
	st, err := target.ParseState(good)
	if err != nil || st.Generation != 3 || st.Free != 2048*1024 || st.Current == "" {
		t.Fatalf("%+v %v", st, err)
	}
	for _, bad := range []string{
		"current=/etc/evil\n",
		"current=/nix/store/0123456789abcdfghijklmnpqrsvwxyz-x/../../etc\n",
		"profile=system--3-link\nprofilepath=/nix/store/0123456789abcdfghijklmnpqrsvwxyz-x\n",
		"profile=system-999999999999-link\nprofilepath=/nix/store/0123456789abcdfghijklmnpqrsvwxyz-x\n",
		"profile=system-0-link\nprofilepath=/nix/store/0123456789abcdfghijklmnpqrsvwxyz-x\n",
		"profile=system-3-link\nprofilepath=/tmp/x\n",
		"free=-5\n",
		"free=99999999999999999999\n",
		"free=1e9\n",
	} {
		if _, err := target.ParseState(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
	// Escape sequences in a refused value are shown, not interpreted.
	_, err = target.ParseState("current=\x1b]0;pwned\a\x1b[2J\r/nix\n")
	if err == nil || strings.ContainsAny(err.Error(), "\x1b\a\r") {
		t.Fatalf("unsanitized: %q", err)
	}
}

func TestHistoryParseMergesAndRejects(t *testing.T) {
	h := target.ParseHistory(strings.Join([]string{
		`{"id":"a","kind":"deploy","generation":2,"path":"/nix/store/0123456789abcdfghijklmnpqrsvwxyz-s","time":"t1","result":"activating"}`,
		`{"id":"a","result":"ok"}`,
		`not json`,
		`{"id":"b","kind":"deploy","generation":-1}`,
		`{"id":"c","kind":"deploy","path":"/etc/passwd"}`,
		`{"id":"a","kind":"rollback","time":"t9","generation":1}`,
		strings.Repeat("x", 20000),
	}, "\n"))
	if len(h) != 2 || h[0].Result != "ok" || h[0].Generation != 2 || h[1].Kind != "rollback" || h[1].ID == "a" {
		t.Fatalf("%+v", h)
	}
}

func TestGenerationNumbers(t *testing.T) {
	for in, want := range map[string]int{"system-1-link": 1, "/nix/var/nix/profiles/system-42-link": 42} {
		if g, ok := target.ParseGeneration(in); !ok || g != want {
			t.Errorf("%s: %d %v", in, g, ok)
		}
	}
	for _, bad := range []string{"system--3-link", "system-0-link", "system-007-link", "system-99999999-link", "system-x-link", "other-1-link"} {
		if _, ok := target.ParseGeneration(bad); ok {
			t.Errorf("accepted %s", bad)
		}
	}
}

func TestCleanMakesControlsVisible(t *testing.T) {
	got := target.Clean("evil\x1b]0;pwned\a\x1b[2J\rlab-server\u009b", 100)
	if strings.ContainsAny(got, "\x1b\a\r\u009b") || !strings.Contains(got, `\x1b`) || !strings.Contains(got, "lab-server") {
		t.Fatalf("%q", got)
	}
	if got := target.Clean(strings.Repeat("a", 500), 10); !strings.HasPrefix(got, strings.Repeat("a", 10)+"…") || strings.Count(got, "a") != 10 {
		t.Fatalf("not cut: %q", got)
	}
}
