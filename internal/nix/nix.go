// Package nix drives the Nix command line: parsing files, checking and
// evaluating the flake, building systems. Only flags that exist in both
// Nix 2.8 and current Nix are used (e.g. `nix build --json --no-link`).
package nix

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"

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
	// Memo remembers what this Nix answered to probes of its command
	// line, shared by the copies of the value. Nil: every call probes
	// again (New sets one).
	Memo *Memo
}

// New is a Nix through r that remembers its probes' answers.
func New(r run.Runner) Nix { return Nix{Runner: r, Memo: &Memo{}} }

// Memo is what probes found out about a Nix; safe for concurrent use.
type Memo struct {
	// jsonFormat: does `nix path-info` take --json-format (0: not known
	// yet, 1: yes, -1: no).
	jsonFormat atomic.Int32
}

func (m *Memo) load() int32 {
	if m == nil {
		return 0
	}
	return m.jsonFormat.Load()
}

func (m *Memo) store(v int32) {
	if m != nil {
		m.jsonFormat.Store(v)
	}
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
	// Alias is a symbolic link to Dir whose path Nix can take (see
	// LinkFlake), used in references at a commit.
	Alias string
}

// Ref is the flake reference for installables.
func (f Flake) Ref() string {
	if f.Rev != "" {
		return "git+file://" + f.urlDir() + "?rev=" + f.Rev
	}
	return f.Dir
}

// urlDir is the repository's path for git+file URLs.
func (f Flake) urlDir() string {
	if f.Alias != "" {
		return f.Alias
	}
	return f.Dir
}

// LinkFlake gives a repository whose path Nix cannot take (PathUsable) a
// symbolic link in a private directory; git+file URLs at a commit work
// through it. remove deletes the link.
func LinkFlake(dir string) (alias string, remove func(), err error) {
	d, err := run.PrivateDir("nixos-config-flake")
	if err != nil {
		return "", nil, err
	}
	alias = filepath.Join(d, "repo")
	if err := os.Symlink(dir, alias); err != nil {
		os.RemoveAll(d)
		return "", nil, err
	}
	return alias, func() { os.RemoveAll(d) }, nil
}

// PathUsable tells whether Nix can take the repository's work tree as a
// flake: a path with a space (or another character that URLs escape) is
// no valid flake reference. Such a repository can still be used at a
// commit (Rev), as a percent-encoded git+file URL.
func (f Flake) PathUsable() bool { return urlSafe(f.Dir) }

// Args are the flags that substitute the nixpkgs input without touching flake.lock.
func (f Flake) Args() []string {
	if f.Nixpkgs == "" {
		return nil
	}
	ref := "path:" + f.Nixpkgs
	if !urlSafe(f.Nixpkgs) && f.Rev != "" {
		// The double is tracked in the repository: take it from the same
		// commit, by its git URL with dir=.
		if rel, err := filepath.Rel(f.Dir, f.Nixpkgs); err == nil && !strings.HasPrefix(rel, "..") {
			ref = "git+file://" + f.urlDir() + "?dir=" + url.QueryEscape(rel) + "&rev=" + f.Rev
		}
	}
	return []string{"--override-input", "nixpkgs", ref, "--no-write-lock-file"}
}

// urlSafe tells whether a path can appear in a flake reference as it is.
func urlSafe(p string) bool {
	for _, r := range p {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-+~@,=:", r)) {
			return false
		}
	}
	return true
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

// run runs one Nix command (nix, nix-instantiate, ...) through the runner;
// problems of this machine's Nix installation become an *EnvError.
func (n Nix) run(ctx context.Context, c run.Cmd) (string, error) {
	out, err := run.Output(ctx, n.Runner, c)
	if err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return "", ErrNotInstalled
		}
		var ee *run.ExitError
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

// ParseFiles checks the syntax of several Nix files with one process (one
// nix-instantiate costs tens of milliseconds). It stops at the first broken
// file; ParseFile then tells which files are broken.
func (n Nix) ParseFiles(ctx context.Context, paths []string) error {
	if len(paths) == 0 {
		return nil
	}
	_, err := n.output(ctx, "nix-instantiate", false, append([]string{"--store", "dummy://", "--parse"}, paths...)...)
	if err == nil {
		return nil
	}
	var ee *run.ExitError
	if errors.As(err, &ee) {
		return ParseError(ee.Stderr, "")
	}
	return err
}

// Error is a Nix error reduced to its message and the location it names.
type Error struct {
	// Message is Nix's message whole: every line of a multi-line message
	// (e.g. "Failed assertions:" and its list), common indentation removed,
	// paths of the flake's store copy made relative. Trace frames, code
	// excerpts and hints about --show-trace are left out.
	Message string
	File    string // relative to the flake when it was inside it
	Line    int    // 0 when Nix named only the file
	Column  int
	Raw     string // the whole error output
	// Drv is the derivation a build error names ("" for others): the key
	// of LogParser.BuildLog.
	Drv string
}

// Error is the message on one line (the lines of a multi-line message
// joined by spaces), after the location when there is one.
func (e *Error) Error() string {
	msg := e.OneLine()
	switch {
	case e.File != "" && e.Line > 0:
		return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Column, msg)
	case e.File != "":
		return e.File + ": " + msg
	}
	return msg
}

// OneLine is the message with its lines joined by spaces.
func (e *Error) OneLine() string {
	var parts []string
	for _, l := range strings.Split(e.Message, "\n") {
		if s := strings.TrimSpace(l); s != "" {
			parts = append(parts, s)
		}
	}
	return strings.Join(parts, " ")
}

var (
	atRE        = regexp.MustCompile(`^\s*at (/[^:]+):(\d+):(\d+):?`)
	errorLineRE = regexp.MustCompile(`^(\s*)error:(.*)$`)
	storeSrcRE  = regexp.MustCompile(`^/nix/store/[0-9a-z]{32}-source/`)
	// storeSrcInTextRE finds store copies of a flake inside a message.
	storeSrcInTextRE = regexp.MustCompile(`/nix/store/[0-9a-z]{32}-source/`)
	// definedInRE is NixOS's "- In `<file>'" line of a definition
	// (the test double adds :line:column).
	definedInRE = regexp.MustCompile("In `([^'`]+?)(?::(\\d+):(\\d+))?'")
)

// endOfMessage tells whether a line ends Nix's message: a location, a trace
// frame, a hint about --show-trace, or anything not indented (Nix indents
// the continuation lines of a message).
func endOfMessage(l string) bool {
	t := strings.TrimSpace(l)
	switch {
	case t == "":
		return false
	case l == t:
		return true
	case atRE.MatchString(l), strings.HasPrefix(t, "at «"), strings.HasPrefix(t, "… "),
		strings.HasPrefix(t, "(use '--show-trace'"), strings.HasPrefix(t, "(stack trace truncated"):
		return true
	}
	return false
}

// ParseError extracts the last "error:" message of Nix's output whole (every
// line of it) and the location that follows it. Locations in the flake's
// store copy (/nix/store/<hash>-source/...) and under root are made
// relative, in the location and in the message. When Nix gives no location
// after the message, the first definition the message names ("In `file'",
// as NixOS's option errors do) is the location.
func ParseError(output, root string) *Error {
	output = StripANSI(output)
	lines := strings.Split(output, "\n")
	e := &Error{Raw: output}
	start := -1
	for i, l := range lines {
		if errorLineRE.MatchString(l) {
			start = i
		}
	}
	if start < 0 {
		e.Message = lastNonEmpty(lines)
		return e
	}
	first := strings.TrimSpace(errorLineRE.FindStringSubmatch(lines[start])[2])
	end := start + 1
	for end < len(lines) && !endOfMessage(lines[end]) {
		end++
	}
	body := dedent(lines[start+1 : end])
	if first != "" {
		body = append([]string{first}, body...)
	}
	for len(body) > 0 && strings.TrimSpace(body[0]) == "" {
		body = body[1:]
	}
	for len(body) > 0 && strings.TrimSpace(body[len(body)-1]) == "" {
		body = body[:len(body)-1]
	}
	// Newer Nix puts hints after the code excerpt of the location.
	for _, l := range lines[end:] {
		if t := strings.TrimSpace(l); strings.HasPrefix(t, "Did you mean") {
			body = append(body, t)
		}
	}
	e.Message = relativeText(strings.Join(body, "\n"), root)
	if e.Message == "" {
		e.Message = lastNonEmpty(lines)
	}
	e.Drv = drvRE.FindString(e.Message)
	for _, l := range lines[end:] {
		if m := atRE.FindStringSubmatch(l); m != nil {
			e.File = relative(m[1], root)
			e.Line, _ = strconv.Atoi(m[2])
			e.Column, _ = strconv.Atoi(m[3])
			return e
		}
	}
	if m := definedInRE.FindStringSubmatch(e.Message); m != nil {
		e.File = relative(m[1], root)
		e.Line, _ = strconv.Atoi(m[2])
		e.Column, _ = strconv.Atoi(m[3])
	}
	return e
}

// dedent removes the indentation the lines share (blank lines aside).
func dedent(lines []string) []string {
	common := -1
	for _, l := range lines {
		if strings.TrimSpace(l) == "" {
			continue
		}
		n := len(l) - len(strings.TrimLeft(l, " \t"))
		if common < 0 || n < common {
			common = n
		}
	}
	out := make([]string, len(lines))
	for i, l := range lines {
		if len(l) >= common && common > 0 {
			l = l[common:]
		}
		out[i] = strings.TrimRight(l, " \t")
	}
	return out
}

// relativeText makes the flake's paths inside a message relative.
func relativeText(s, root string) string {
	s = storeSrcInTextRE.ReplaceAllString(s, "")
	if root != "" {
		s = strings.ReplaceAll(s, strings.TrimSuffix(root, "/")+"/", "")
	}
	return s
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
