// Package check implements `mage check`: parse every Nix file, lint the
// inventory, run `nix flake check`, then warn about insecure settings.
// It stops at the first broken stage.
package check

import (
	"context"
	"errors"
	"fmt"
	"github.com/monibahmed/nixos-config/internal/trouble"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/monibahmed/nixos-config/internal/inventory"
	"github.com/monibahmed/nixos-config/internal/nix"
	"github.com/monibahmed/nixos-config/internal/ui"
)

// Nix is what the check needs from the nix package.
type Nix interface {
	Version(ctx context.Context) (nix.Version, error)
	ParseFile(ctx context.Context, path string) error
	ParseFiles(ctx context.Context, paths []string) error
	FlakeCheck(ctx context.Context, f nix.Flake) error
	EvalJSON(ctx context.Context, f nix.Flake, attr, apply string) (string, error)
}

// Git is what the check needs from git.
type Git interface {
	Tracked(ctx context.Context, pathspecs ...string) ([]string, error)
	Untracked(ctx context.Context, pathspecs ...string) ([]string, error)
}

// Options configure a run.
type Options struct {
	Root string // repository root
	// Offline: nil chooses automatically (the test double when Nix is older
	// than nixpkgs needs), true forces the double, false forces real nixpkgs.
	Offline *bool
}

// Result summarises a successful run.
type Result struct {
	Files    int
	Targets  []string
	Offline  bool
	Warnings []string
}

// StageError is a failed stage; its message is the one line users see.
type StageError struct {
	Stage int
	Name  string
	Err   error
}

func (e *StageError) Error() string {
	var env *nix.EnvError
	if errors.As(e.Err, &env) {
		// Not the repository's fault: the message names its own section.
		return fmt.Sprintf("check failed at stage %d/4 (%s): %v", e.Stage, e.Name, e.Err)
	}
	return fmt.Sprintf("check failed at stage %d/4 (%s): %v (%s)", e.Stage, e.Name, e.Err, trouble.See(trouble.Check))
}

func (e *StageError) Unwrap() error { return e.Err }

// Checker runs the stages.
type Checker struct {
	Nix Nix
	Git Git
	Out *ui.Printer
}

// Run executes all four stages in order.
func (c *Checker) Run(ctx context.Context, opts Options) (*Result, error) {
	res := &Result{}
	n, err := c.parse(ctx, opts.Root)
	if err != nil {
		return nil, &StageError{1, "parse", err}
	}
	res.Files = n
	c.Out.Linef("check 1/4 parse: %s (%d tracked .nix files)", c.Out.OK("ok"), n)

	inv, err := c.inventory(ctx, opts.Root)
	if err != nil {
		return nil, &StageError{2, "inventory", err}
	}
	res.Targets = inv.Names()
	c.Out.Linef("check 2/4 inventory: %s (%d targets: %s)", c.Out.OK("ok"), len(res.Targets), strings.Join(res.Targets, ", "))

	flake, note, err := c.flake(ctx, opts)
	if err != nil {
		return nil, &StageError{3, "nix flake check", err}
	}
	res.Offline = flake.Offline()
	c.Out.Linef("check 3/4 nix flake check%s: running", note)
	if err := c.Nix.FlakeCheck(ctx, flake); err != nil {
		return nil, &StageError{3, "nix flake check", evalHint(err, flake.Offline())}
	}
	c.Out.Linef("check 3/4 nix flake check%s: %s", note, c.Out.OK("ok"))

	warnings, err := c.security(ctx, flake, inv)
	if err != nil {
		return nil, &StageError{4, "security lint", evalHint(err, flake.Offline())}
	}
	warnings = append(warnings, HardwareWarnings(opts.Root, inv)...)
	res.Warnings = warnings
	if len(warnings) == 0 {
		c.Out.Linef("check 4/4 security: %s", c.Out.OK("ok"))
	} else {
		c.Out.Linef("check 4/4 security: %d %s", len(warnings), c.Out.Warning("warnings"))
		for _, w := range warnings {
			c.Out.Linef("  %s %s", c.Out.Warning("warning:"), w)
		}
	}
	return res, nil
}

// OfflineSchemaNote follows an option error found against the test double.
const OfflineSchemaNote = "(offline check: the test double declares only the options this repository uses; `mage check` with Nix >= 2.18 and the pinned nixpkgs is the authority)"

func evalHint(err error, offline bool) error {
	var ne *nix.Error
	if !errors.As(err, &ne) {
		return err
	}
	if offline && (strings.Contains(ne.Message, "' does not exist.") || strings.Contains(ne.Message, "' is not of type `")) {
		err = fmt.Errorf("%w %s", err, OfflineSchemaNote)
	}
	if ne.File != "" {
		return fmt.Errorf("%w (fix the expression at that location and rerun mage check)", err)
	}
	return err
}

// parse checks the syntax of every tracked .nix file, a few at a time.
func (c *Checker) parse(ctx context.Context, root string) (int, error) {
	files, err := c.Git.Tracked(ctx, "*.nix")
	if err != nil {
		return 0, err
	}
	sort.Strings(files)
	var present []string
	for _, f := range files {
		if _, err := os.Stat(filepath.Join(root, f)); err == nil {
			present = append(present, filepath.Join(root, f))
		}
	}
	// One process for all files; only when something is broken, one per
	// file, so that every broken file is named.
	if err := c.Nix.ParseFiles(ctx, present); err == nil {
		return len(files), nil
	} else if ne := (*nix.Error)(nil); !errors.As(err, &ne) {
		return 0, err
	}
	errs := make([]error, len(files))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for i, f := range files {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			path := filepath.Join(root, f)
			if _, statErr := os.Stat(path); errors.Is(statErr, os.ErrNotExist) {
				return // deleted in the work tree; git status shows it
			}
			if err := c.Nix.ParseFile(ctx, path); err != nil {
				var ne *nix.Error
				if errors.As(err, &ne) {
					if ne.File == "" || ne.File == path {
						ne.File = f
					} else if rel, relErr := filepath.Rel(root, ne.File); relErr == nil {
						ne.File = rel
					}
					errs[i] = ne
					return
				}
				errs[i] = fmt.Errorf("%s: %w", f, err)
			}
		}()
	}
	wg.Wait()
	for _, e := range errs {
		// Nix itself cannot run here (e.g. the daemon refuses this user):
		// one error, the same for every file, and no syntax to fix.
		var env *nix.EnvError
		if errors.As(e, &env) {
			return 0, env
		}
	}
	var bad []error
	for _, e := range errs {
		if e != nil {
			bad = append(bad, e)
			c.Out.Linef("  %s %v", c.Out.Bad("error:"), e)
		}
	}
	if len(bad) > 0 {
		return 0, withMore(fmt.Errorf("%w (fix the syntax and rerun mage check)", bad[0]), len(bad)-1)
	}
	return len(files), nil
}

func withMore(err error, more int) error {
	if more > 0 {
		return fmt.Errorf("%w; and %d more problems listed above", err, more)
	}
	return err
}

// inventory lints names, addresses and files of every target, and makes sure
// everything the flake reads is tracked by git.
func (c *Checker) inventory(ctx context.Context, root string) (*inventory.Inventory, error) {
	var probs []string
	// Untracked files first: nothing else makes sense while the flake cannot see them.
	untracked, err := c.Git.Untracked(ctx, "flake.nix", "flake.lock", "targets")
	if err != nil {
		return nil, err
	}
	reported := map[string]bool{}
	for _, f := range untracked {
		unit := f
		parts := strings.Split(f, "/")
		if len(parts) >= 3 && parts[0] == "targets" {
			dir := parts[0] + "/" + parts[1]
			if tracked, _ := c.Git.Tracked(ctx, dir); len(tracked) == 0 {
				unit = dir + "/"
			}
		}
		if reported[unit] {
			continue
		}
		reported[unit] = true
		probs = append(probs, fmt.Sprintf("%s is not tracked by git, and flakes ignore untracked files: run `git add %s`", unit, strings.TrimSuffix(unit, "/")))
	}

	inv, err := inventory.LoadRepo(root)
	if err != nil {
		return nil, err
	}
	if len(inv.Targets) == 0 {
		probs = append(probs, "no targets: create one with `mage new <name>`")
	}
	for _, t := range inv.Targets {
		if reported["targets/"+t.Name+"/"] {
			continue
		}
		if err := inventory.ValidateName(t.Name); err != nil {
			probs = append(probs, fmt.Sprintf("targets/%s: %v: rename the directory", t.Name, err))
			continue
		}
		for _, f := range inventory.RequiredFiles() {
			if _, err := os.Stat(filepath.Join(root, "targets", t.Name, f)); err != nil {
				probs = append(probs, fmt.Sprintf("targets/%s: missing %s (every target needs %s)", t.Name, f, strings.Join(inventory.RequiredFiles(), ", ")))
			}
		}
	}
	for _, p := range inv.Lint() {
		if p.Target != "" && (reported["targets/"+p.Target+"/"] || inventory.ValidateName(p.Target) != nil) {
			continue // already reported
		}
		probs = append(probs, "targets/"+p.String())
	}
	if len(probs) > 0 {
		for _, p := range probs {
			c.Out.Linef("  %s %s", c.Out.Bad("error:"), p)
		}
		return nil, withMore(errors.New(probs[0]), len(probs)-1)
	}
	return inv, nil
}

// flake decides between the pinned nixpkgs and the test double.
func (c *Checker) flake(ctx context.Context, opts Options) (nix.Flake, string, error) {
	f := nix.Flake{Dir: opts.Root}
	double := filepath.Join(opts.Root, nix.DoubleDir)
	useDouble := func() (nix.Flake, error) {
		if _, err := os.Stat(filepath.Join(double, "flake.nix")); err != nil {
			return f, fmt.Errorf("test double missing at %s: %w", nix.DoubleDir, err)
		}
		f.Nixpkgs = double
		return f, nil
	}
	const offlineNote = " (offline: against the nixpkgs test double " + nix.DoubleDir + ", not the pinned nixpkgs)"
	if opts.Offline != nil && *opts.Offline {
		f, err := useDouble()
		return f, offlineNote, err
	}
	v, err := c.Nix.Version(ctx)
	if err != nil {
		return f, "", err
	}
	if !v.AtLeast(nix.MinVersionForNixpkgs) {
		if opts.Offline != nil {
			return f, "", fmt.Errorf("nix %s is too old for the pinned nixpkgs, which needs Nix >= %s (nixpkgs lib/minver.nix): upgrade Nix, or run `mage check -offline` to evaluate against the test double", v, nix.MinVersionForNixpkgs)
		}
		c.Out.Linef("check 3/4 note: nix %s is older than %s, the minimum of the pinned nixpkgs; evaluating against the test double instead (install Nix >= %s for a real check)", v, nix.MinVersionForNixpkgs, nix.MinVersionForNixpkgs)
		f, err := useDouble()
		return f, offlineNote, err
	}
	return f, " (pinned nixpkgs from flake.lock)", nil
}
