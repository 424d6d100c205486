// Package testutil holds helpers shared by the integration tests: the
// compiled mage binary, throw-away copies of the repository, and
// prerequisite checks that fail (never skip) in CI.
package testutil

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// InCI reports whether the tests run in CI, where missing prerequisites are failures.
func InCI() bool { return os.Getenv("CI") == "true" }

// Require fails the test in CI and skips it elsewhere when ok is false.
func Require(t testing.TB, ok bool, format string, args ...any) {
	t.Helper()
	if ok {
		return
	}
	msg := "prerequisite missing: " + fmt.Sprintf(format, args...)
	if InCI() {
		t.Fatal(msg + " (CI=true: tests must not skip; .ci/run installs it)")
	}
	t.Skip(msg)
}

// RequireTools checks that commands are on PATH.
func RequireTools(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		_, err := exec.LookPath(tool)
		Require(t, err == nil, "%s is not installed", tool)
	}
}

// RequireRoot checks that the test runs as root (namespaces, mounts).
func RequireRoot(t testing.TB) {
	t.Helper()
	Require(t, os.Geteuid() == 0, "the test must run as root")
}

// RepoRoot is the repository this test binary was built from.
func RepoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the repository")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

var (
	mageOnce sync.Once
	mageBin  string
	mageErr  error
)

// RemoveMageBinary deletes what MageBinary compiled; a package's TestMain
// calls it after its tests (the binary is shared by all of them).
func RemoveMageBinary() {
	if mageBin != "" {
		os.RemoveAll(filepath.Dir(mageBin))
	}
}

// MageBinary compiles the repository's magefiles once per test process.
func MageBinary(t testing.TB) string {
	t.Helper()
	RequireTools(t, "go", "git")
	mageOnce.Do(func() {
		dir, err := os.MkdirTemp("", "nixos-config-mage-")
		if err != nil {
			mageErr = err
			return
		}
		mageBin = filepath.Join(dir, "mage")
		cmd := exec.Command("go", "run", "magefile.go", "-compile", mageBin)
		cmd.Dir = RepoRoot(t)
		out, err := cmd.CombinedOutput()
		if err != nil {
			mageErr = fmt.Errorf("compiling magefiles: %v\n%s", err, out)
		}
	})
	if mageErr != nil {
		t.Fatal(mageErr)
	}
	return mageBin
}

// Result of a command run by Run.
type Result struct {
	Stdout, Stderr string
	Code           int
}

// Combined is stdout followed by stderr.
func (r Result) Combined() string { return r.Stdout + r.Stderr }

// Run runs a command in dir with a timeout and returns its outputs and exit code.
func Run(t testing.TB, dir string, env []string, name string, args ...string) Result {
	t.Helper()
	return RunInput(t, dir, env, "", name, args...)
}

// RunInput is Run with standard input.
func RunInput(t testing.TB, dir string, env []string, stdin, name string, args ...string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	res := Result{Stdout: so.String(), Stderr: se.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		res.Code = ee.ExitCode()
	default:
		t.Fatalf("running %s %v: %v", name, args, err)
	}
	if ctx.Err() != nil {
		t.Fatalf("%s %v did not finish within 10 minutes:\n%s", name, args, res.Stdout+res.Stderr)
	}
	return res
}

// Git runs git in dir and fails the test on error.
func Git(t testing.TB, dir string, args ...string) string {
	t.Helper()
	// No automatic maintenance: git 2.5x (Debian sid) runs it detached
	// after commits, and it then writes into .git/objects while the test's
	// TempDir is being removed ("directory not empty").
	args = append([]string{"-c", "maintenance.auto=false", "-c", "gc.auto=0", "-c", "gc.autoDetach=false"}, args...)
	r := Run(t, dir, nil, "git", args...)
	if r.Code != 0 {
		t.Fatalf("git %s: %s", strings.Join(args, " "), r.Combined())
	}
	return r.Stdout
}

// CopyRepo copies the repository's files (tracked, and new files not yet
// ignored) into a fresh git repository with one commit, and returns its path.
func CopyRepo(t testing.TB) string {
	t.Helper()
	RequireTools(t, "git")
	src := RepoRoot(t)
	dst := t.TempDir()
	files := Git(t, src, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
	for _, f := range strings.Split(files, "\x00") {
		if f == "" {
			continue
		}
		info, err := os.Lstat(filepath.Join(src, f))
		if err != nil {
			continue // deleted in the work tree
		}
		if info.IsDir() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dst, f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, f), data, info.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
	Git(t, dst, "init", "-q", "-b", "main")
	Git(t, dst, "add", "-A")
	Commit(t, dst, "copy of the repository")
	return dst
}

// Commit commits everything staged with a fixed identity.
func Commit(t testing.TB, dir, msg string) {
	t.Helper()
	Git(t, dir, "-c", "user.name=test", "-c", "user.email=test@example.invalid", "commit", "-q", "--allow-empty", "-m", msg)
}

// Edit replaces old by new in a file of dir, failing when old is absent.
func Edit(t testing.TB, dir, file, old, new string) {
	t.Helper()
	p := filepath.Join(dir, file)
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), old) {
		t.Fatalf("%s does not contain %q", file, old)
	}
	if err := os.WriteFile(p, []byte(strings.Replace(string(data), old, new, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
}

// ErrorLine returns the line mage printed for a failed target ("Error: ...").
func ErrorLine(r Result) string {
	for _, l := range strings.Split(r.Stderr, "\n") {
		if strings.HasPrefix(l, "Error: ") {
			return l
		}
	}
	return ""
}
