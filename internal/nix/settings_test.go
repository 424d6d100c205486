package nix

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/monibahmed/nixos-config/internal/run"
)

// fakeRunner records command lines and answers from a script.
type fakeRunner struct {
	calls  [][]string
	answer func(args []string) (string, error)
}

func (f *fakeRunner) Run(ctx context.Context, c run.Cmd) error {
	f.calls = append(f.calls, append([]string{c.Name}, c.Args...))
	out, err := f.answer(c.Args)
	if c.Stdout != nil {
		fmt.Fprint(c.Stdout, out)
	}
	return err
}

func joined(args []string) string { return strings.Join(args, "|") }

func TestGlobalArgs(t *testing.T) {
	on := joined(GlobalArgs(false))
	if !strings.HasPrefix(on, "--extra-experimental-features|nix-command flakes") {
		t.Errorf("features: %s", on)
	}
	if strings.Contains(on, "sandbox") || strings.Contains(on, "substituters") {
		t.Errorf("real nixpkgs keeps the machine's sandbox and caches: %s", on)
	}
	off := joined(GlobalArgs(true))
	if !strings.Contains(off, "--option|sandbox|false") || !strings.HasSuffix(off, "--option|substituters|") {
		t.Errorf("offline: %s", off)
	}
	wantGroup := os.Geteuid() == 0 && !groupExists("nixbld")
	if got := strings.Contains(on, "--option|build-users-group|"); got != wantGroup {
		t.Errorf("build-users-group override %v, want %v (root %v, nixbld %v)", got, wantGroup, os.Geteuid() == 0, groupExists("nixbld"))
	}
}

func TestCommandLinesCarryTheSettings(t *testing.T) {
	f := &fakeRunner{answer: func(args []string) (string, error) { return `[{"outputs":{"out":"/nix/store/x"}}]`, nil }}
	n := Nix{Runner: f}
	ctx := context.Background()
	if err := n.ParseFile(ctx, "/r/a.nix"); err != nil {
		t.Fatal(err)
	}
	if c := joined(f.calls[0]); !strings.HasPrefix(c, "nix-instantiate|--extra-experimental-features") || !strings.Contains(c, "--store|dummy://|--parse|/r/a.nix") {
		t.Errorf("parse: %s", c)
	}
	if _, err := n.Build(ctx, Flake{Dir: "/r", Nixpkgs: "/r/double"}, []string{"a"}, nil); err != nil {
		t.Fatal(err)
	}
	if c := joined(f.calls[1]); !strings.Contains(c, "--option|sandbox|false") || !strings.Contains(c, "--option|substituters||build") {
		t.Errorf("offline build: %s", c)
	}
	_ = n.FlakeCheck(ctx, Flake{Dir: "/r"})
	if c := joined(f.calls[2]); strings.Contains(c, "sandbox") || !strings.Contains(c, "flake|check|/r") {
		t.Errorf("flake check with real nixpkgs: %s", c)
	}
}

func TestPathInfoFallsBackWithoutJSONFormat(t *testing.T) {
	f := &fakeRunner{answer: func(args []string) (string, error) {
		if strings.Contains(joined(args), "--json-format") {
			return "", &run.ExitError{Cmd: "nix", Code: 1, Stderr: "error: unrecognised flag '--json-format'\nTry 'nix --help' for more information.\n"}
		}
		return `[{"path":"/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x","narSize":5,"closureSize":5,"references":[]}]`, nil
	}}
	sizes, err := Nix{Runner: f}.Closures(context.Background(), []string{"/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x"})
	if err != nil || sizes["/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x"]["/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x"] != 5 || len(f.calls) != 2 {
		t.Fatalf("%v %v %v", sizes, err, f.calls)
	}
	// The answer is remembered: the next call starts nix once, without the
	// flag.
	f.calls = nil
	n := New(f)
	for i, want := range []int{2, 3} {
		if _, err := n.Closures(context.Background(), []string{"/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x"}); err != nil || len(f.calls) != want {
			t.Fatalf("call %d: %v, nix ran %d times in all, want %d: %v", i+1, err, len(f.calls), want, f.calls)
		}
	}
	if last := joined(f.calls[2]); strings.Contains(last, "--json-format") {
		t.Errorf("the second call asked again: %s", last)
	}
	// A Nix that takes the flag keeps being asked with it.
	f = &fakeRunner{answer: func(args []string) (string, error) {
		return `{"info":{"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x":{"narSize":5,"references":[]}},"storeDir":"/nix/store","version":2}`, nil
	}}
	n = New(f)
	for i := 0; i < 2; i++ {
		sizes, err := n.Closures(context.Background(), []string{"/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x"})
		if err != nil || sizes["/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x"]["/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x"] != 5 || len(f.calls) != i+1 || !strings.Contains(joined(f.calls[i]), "--json-format|2") {
			t.Fatalf("format 2, call %d: %v %v %v", i+1, sizes, err, f.calls)
		}
	}
	// A real failure is not retried.
	f = &fakeRunner{answer: func(args []string) (string, error) {
		return "", &run.ExitError{Cmd: "nix", Code: 1, Stderr: "error: path '/nix/store/x' is not valid\n"}
	}}
	if _, err := (Nix{Runner: f}).Closures(context.Background(), []string{"/nix/store/x"}); err == nil || len(f.calls) != 1 {
		t.Fatalf("%v %v", err, f.calls)
	}
}

func TestEnvironmentErrorsAreNotParseErrors(t *testing.T) {
	f := &fakeRunner{answer: func(args []string) (string, error) {
		return "", &run.ExitError{Cmd: "nix-instantiate", Code: 1, Stderr: "error: getting status of /nix/var/nix/daemon-socket/socket: Permission denied\n"}
	}}
	err := Nix{Runner: f}.ParseFile(context.Background(), "/r/a.nix")
	var env *EnvError
	var ne *Error
	if !errors.As(err, &env) || errors.As(err, &ne) || env.Kind != EnvDaemonPermission {
		t.Fatalf("%T %v", err, err)
	}
	err = Nix{Runner: f}.FlakeCheck(context.Background(), Flake{Dir: "/r"})
	if !errors.As(err, &env) || errors.As(err, &ne) {
		t.Fatalf("flake check: %T %v", err, err)
	}
}

func TestOneLine(t *testing.T) {
	in := "Cannot build '/nix/store/0123456789abcdfghijklmnpqrsvwxyz-a.drv'.\nReason: builder failed with exit code 2.\nOutput paths:\n  /nix/store/0123456789abcdfghijklmnpqrsvwxyz-a\n  /nix/store/0123456789abcdfghijklmnpqrsvwxyz-a-doc"
	if got := OneLine(in); got != "Cannot build '/nix/store/0123456789abcdfghijklmnpqrsvwxyz-a.drv'. Reason: builder failed with exit code 2." {
		t.Errorf("%q", got)
	}
	if got := OneLine("builder for '/nix/store/x.drv' failed with exit code 1"); got != "builder for '/nix/store/x.drv' failed with exit code 1" {
		t.Errorf("%q", got)
	}
}
