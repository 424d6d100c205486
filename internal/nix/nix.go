// Package nix drives the Nix command line: parsing files, checking and
// evaluating the flake, building systems. Only flags that exist in both
// Nix 2.8 and current Nix are used (e.g. `nix build --json --no-link`).
package nix

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/monibahmed/nixos-config/internal/run"
)

// MinVersionForNixpkgs is the oldest Nix the pinned nixpkgs accepts
// (nixpkgs lib/minver.nix).
const MinVersionForNixpkgs = "2.18"

// DoubleDir is the test double for nixpkgs, relative to the repository root.
const DoubleDir = "internal/nix/double"

// Nix runs nix commands through a Runner.
type Nix struct {
	Runner run.Runner
	// Env is added to every nix process (e.g. NIX_SSHOPTS); may be nil.
	Env []string
	// Bin is the nix command; default "nix" from PATH.
	Bin string
}

func (n Nix) bin() string {
	if n.Bin != "" {
		return n.Bin
	}
	return "nix"
}

// Flake names the repository's flake and, optionally, a replacement for its
// nixpkgs input (the test double).
type Flake struct {
	Dir     string // absolute path of the repository
	Nixpkgs string // absolute path to use as the nixpkgs input; empty: the locked one
	Rev     string // a commit of the repository to use instead of the work tree
}

// Ref is the flake reference for installables.
func (f Flake) Ref() string {
	if f.Rev != "" {
		return "git+file://" + f.Dir + "?rev=" + f.Rev
	}
	return f.Dir
}

// Args are the flags that substitute the nixpkgs input without touching flake.lock.
func (f Flake) Args() []string {
	if f.Nixpkgs == "" {
		return nil
	}
	return []string{"--override-input", "nixpkgs", "path:" + f.Nixpkgs, "--no-write-lock-file"}
}

// Offline tells whether the flake evaluates against the test double.
func (f Flake) Offline() bool { return f.Nixpkgs != "" }

// Version is a parsed `nix --version`.
type Version struct {
	Major, Minor, Patch int
	Raw                 string
}

func (v Version) String() string { return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch) }

// AtLeast compares major.minor with s ("2.18").
func (v Version) AtLeast(s string) bool {
	var maj, min int
	if _, err := fmt.Sscanf(s, "%d.%d", &maj, &min); err != nil {
		return false
	}
	return v.Major > maj || v.Major == maj && v.Minor >= min
}

var versionRE = regexp.MustCompile(`(\d+)\.(\d+)(?:\.(\d+))?`)

// ParseVersion reads the output of `nix --version`.
func ParseVersion(out string) (Version, error) {
	m := versionRE.FindStringSubmatch(out)
	if m == nil {
		return Version{}, fmt.Errorf("cannot read a version from %q", strings.TrimSpace(out))
	}
	v := Version{Raw: strings.TrimSpace(out)}
	v.Major, _ = strconv.Atoi(m[1])
	v.Minor, _ = strconv.Atoi(m[2])
	if m[3] != "" {
		v.Patch, _ = strconv.Atoi(m[3])
	}
	return v, nil
}

// ErrNotInstalled is returned when the nix command cannot be found.
var ErrNotInstalled = errors.New("nix is not installed (or not on PATH): install Nix, e.g. the nix-bin package on Debian, or see https://nixos.org/download")

// Version runs `nix --version`.
func (n Nix) Version(ctx context.Context) (Version, error) {
	out, err := n.run(ctx, run.Cmd{Name: n.bin(), Args: []string{"--version"}})
	if err != nil {
		return Version{}, err
	}
	return ParseVersion(out)
}

// output runs a nix command (name "nix" is n.Bin) with the toolkit's own
// settings (GlobalArgs) before args.
func (n Nix) output(ctx context.Context, name string, offline bool, args ...string) (string, error) {
	if name == "nix" {
		name = n.bin()
	}
	return n.run(ctx, run.Cmd{Name: name, Args: append(GlobalArgs(offline), args...), Env: n.Env})
}

func (n Nix) run(ctx context.Context, c run.Cmd) (string, error) {
	out, err := run.Output(ctx, n.Runner, c)
	if err != nil {
		var ee *run.ExitError
		if !errors.As(err, &ee) && strings.Contains(err.Error(), "executable file not found") {
			return "", ErrNotInstalled
		}
		if errors.As(err, &ee) && !ee.Canceled {
			if env := Environment(ee.Stderr); env != nil {
				env.Err = err
				return out, env
			}
		}
	}
	return out, err
}

// ParseFile checks the syntax of one Nix file. Parsing needs no store: the
// dummy store keeps nix-instantiate away from /nix and the daemon, so that
// it works for any user (and without a daemon socket this user may open).
func (n Nix) ParseFile(ctx context.Context, path string) error {
	_, err := n.output(ctx, "nix-instantiate", false, "--store", "dummy://", "--parse", path)
	if err == nil {
		return nil
	}
	var ee *run.ExitError
	var env *EnvError
	if errors.As(err, &ee) && !errors.As(err, &env) {
		return ParseError(ee.Stderr, "")
	}
	return err
}

// Error is a Nix error reduced to its message and the location it names.
type Error struct {
	Message string // one line
	File    string // relative to the flake when it was inside it
	Line    int
	Column  int
	Raw     string // the whole error output
	// Drv is the derivation a build error names ("" for others): the key
	// of LogParser.BuildLog.
	Drv string
}

func (e *Error) Error() string {
	if e.File != "" {
		return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Column, e.Message)
	}
	return e.Message
}

var (
	atRE        = regexp.MustCompile(`^\s*at (/[^:]+):(\d+):(\d+):?`)
	errorLineRE = regexp.MustCompile(`^\s*error:\s*(.*)$`)
	storeSrcRE  = regexp.MustCompile(`^/nix/store/[0-9a-z]{32}-source/`)
)

// ParseError extracts the innermost "error:" message and the location that
// follows it from Nix's output. Locations in the flake's store copy
// (/nix/store/<hash>-source/...) and under root are made relative.
func ParseError(output, root string) *Error {
	lines := strings.Split(output, "\n")
	e := &Error{Raw: output}
	msgAt := -1
	for i, l := range lines {
		if m := errorLineRE.FindStringSubmatch(l); m != nil && strings.TrimSpace(m[1]) != "" {
			e.Message = strings.TrimSpace(m[1])
			msgAt = i
		}
	}
	if msgAt < 0 {
		e.Message = lastNonEmpty(lines)
		return e
	}
	// Nix 2.34 continues a build failure on the next lines ("Reason: …").
	for _, l := range lines[msgAt+1:] {
		t := strings.TrimSpace(l)
		if !strings.HasPrefix(t, "Reason:") {
			break
		}
		e.Message += " " + t
	}
	e.Drv = drvRE.FindString(e.Message)
	for _, l := range lines[msgAt+1:] {
		if m := atRE.FindStringSubmatch(l); m != nil {
			e.File = relative(m[1], root)
			e.Line, _ = strconv.Atoi(m[2])
			e.Column, _ = strconv.Atoi(m[3])
			break
		}
	}
	return e
}

func relative(p, root string) string {
	if loc := storeSrcRE.FindStringIndex(p); loc != nil {
		return p[loc[1]:]
	}
	if root != "" {
		if rel, err := filepath.Rel(root, p); err == nil && !strings.HasPrefix(rel, "..") {
			return rel
		}
	}
	return p
}

func lastNonEmpty(lines []string) string {
	for i := len(lines) - 1; i >= 0; i-- {
		if s := strings.TrimSpace(lines[i]); s != "" {
			return s
		}
	}
	return "unknown error"
}

// FlakeCheck runs `nix flake check` on the flake.
func (n Nix) FlakeCheck(ctx context.Context, f Flake) error {
	args := append([]string{"flake", "check", f.Ref()}, f.Args()...)
	_, err := n.output(ctx, "nix", f.Offline(), args...)
	return n.wrap(err, f)
}

func (n Nix) wrap(err error, f Flake) error {
	if err == nil {
		return nil
	}
	var ee *run.ExitError
	var env *EnvError
	if errors.As(err, &ee) && !ee.Canceled && !errors.As(err, &env) {
		return ParseError(ee.Stderr, f.Dir)
	}
	return err
}

// EvalJSON evaluates an installable of the flake, optionally applying a
// function, and returns the JSON text.
func (n Nix) EvalJSON(ctx context.Context, f Flake, attr, apply string) (string, error) {
	args := []string{"eval", "--json", f.Ref() + "#" + attr}
	if apply != "" {
		args = append(args, "--apply", apply)
	}
	args = append(args, f.Args()...)
	out, err := n.output(ctx, "nix", f.Offline(), args...)
	return out, n.wrap(err, f)
}

// Rel returns e with its file made relative to the flake source.
func (e *Error) Rel(root string) *Error {
	c := *e
	if c.File != "" {
		c.File = relative(c.File, root)
	}
	return &c
}

// GenerationOf reads N from a profile generation link "system-N-link" (or
// a path ending in it); 0 otherwise.
func GenerationOf(link string) int {
	link = filepath.Base(strings.TrimSpace(link))
	if !strings.HasPrefix(link, "system-") || !strings.HasSuffix(link, "-link") {
		return 0
	}
	n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(link, "system-"), "-link"))
	if err != nil {
		return 0
	}
	return n
}
