// Package gitx answers the questions the toolkit asks git: which files are
// tracked (flakes only see tracked files), whether the tree is dirty, which
// commit is checked out.
package gitx

import (
	"context"
	"errors"
	"fmt"
	"github.com/monibahmed/nixos-config/internal/trouble"
	"strings"

	"github.com/monibahmed/nixos-config/internal/run"
)

// Git runs git in one repository.
type Git struct {
	Runner run.Runner
	Dir    string
}

func (g Git) out(ctx context.Context, args ...string) (string, error) {
	out, err := run.Output(ctx, g.Runner, run.Cmd{Name: "git", Args: append([]string{"-C", g.Dir}, args...)})
	if err != nil {
		var ee *run.ExitError
		if errors.As(err, &ee) {
			return out, fmt.Errorf("git %s: %s", strings.Join(args, " "), strings.TrimSpace(ee.Stderr))
		}
		return out, fmt.Errorf("git: %w", err)
	}
	return out, nil
}

// Root returns the top-level directory of the work tree containing Dir.
func (g Git) Root(ctx context.Context) (string, error) {
	out, err := g.out(ctx, "rev-parse", "--show-toplevel")
	if err != nil {
		return "", fmt.Errorf("%s is not inside a git work tree (flakes need one): %w", g.Dir, err)
	}
	return strings.TrimSpace(out), nil
}

func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\x00") {
		if l != "" {
			out = append(out, l)
		}
	}
	return out
}

// Tracked lists tracked files matching the pathspecs (all when none).
func (g Git) Tracked(ctx context.Context, pathspecs ...string) ([]string, error) {
	out, err := g.out(ctx, append([]string{"ls-files", "-z", "--"}, pathspecs...)...)
	return lines(out), err
}

// Untracked lists files that are neither tracked nor ignored.
func (g Git) Untracked(ctx context.Context, pathspecs ...string) ([]string, error) {
	out, err := g.out(ctx, append([]string{"ls-files", "-z", "--others", "--exclude-standard", "--"}, pathspecs...)...)
	return lines(out), err
}

// Dirty reports whether tracked files differ from HEAD (untracked files do
// not count: flakes ignore them).
func (g Git) Dirty(ctx context.Context) (bool, error) {
	out, err := g.out(ctx, "status", "--porcelain", "--untracked-files=no")
	return strings.TrimSpace(out) != "", err
}

// Head returns the full commit id of HEAD.
func (g Git) Head(ctx context.Context) (string, error) {
	return g.RevParse(ctx, "HEAD")
}

// RevParse resolves a revision to a full commit id.
func (g Git) RevParse(ctx context.Context, rev string) (string, error) {
	if strings.HasPrefix(rev, "-") {
		return "", fmt.Errorf("invalid revision %q", rev)
	}
	out, err := g.out(ctx, "rev-parse", "--verify", "--quiet", rev+"^{commit}")
	if err != nil || strings.TrimSpace(out) == "" {
		return "", fmt.Errorf("unknown git revision %q: use a commit, tag or branch of this repository (git log --oneline) (%s)", rev, trouble.See(trouble.GitState))
	}
	return strings.TrimSpace(out), nil
}

// Add stages paths.
func (g Git) Add(ctx context.Context, paths ...string) error {
	_, err := g.out(ctx, append([]string{"add", "--"}, paths...)...)
	return err
}

// IsAncestor reports whether commit is in HEAD's history.
func (g Git) IsAncestor(ctx context.Context, commit string) bool {
	if commit == "" || strings.HasPrefix(commit, "-") {
		return false
	}
	_, err := g.out(ctx, "merge-base", "--is-ancestor", commit, "HEAD")
	return err == nil
}
