// Package hwconfig checks a hardware-configuration.nix against what
// nixos-generate-config writes, so that a machine answering
// `nixos-generate-config --show-hardware-config` cannot slip users, SSH
// keys, sudo rules, services or anything else into the repository.
//
// The check is structural and runs nothing: a lexer and parser of the small
// part of the Nix language the generator uses (anything outside it is
// reported, not guessed at), then an allow-list of attribute paths with the
// type and shape of value each may have (allow.go). Evaluating the file
// instead was rejected: a file can tell stub arguments from real ones
// (builtins.attrNames lib, tryEval, …) and define other things at deploy
// time than during the check, and evaluation can read files or fetch URLs.
package hwconfig

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/monibahmed/nixos-config/internal/ui"
)

// MaxSize is the largest hardware configuration accepted; a generated one
// is a few KiB.
const MaxSize = 64 << 10

// Finding is something nixos-generate-config never writes.
type Finding struct {
	Line int
	Path string // the attribute path ("" for problems of the text itself)
	What string
}

func (f Finding) String() string {
	if f.Path == "" {
		return fmt.Sprintf("line %d: %s", f.Line, f.What)
	}
	return fmt.Sprintf("line %d: %s: %s", f.Line, f.Path, f.What)
}

// Report is the result of Analyze.
type Report struct {
	// Options are the allowed options the file sets.
	Options []string
	// Findings, in order of lines; empty when the file only holds what
	// nixos-generate-config writes.
	Findings []Finding
}

// OK reports whether nothing was found.
func (r Report) OK() bool { return len(r.Findings) == 0 }

// Summary is the findings in one line: the first few (options before
// problems of the text), and how many more.
func (r Report) Summary(n int) string {
	var parts []string
	fs := append([]Finding(nil), r.Findings...)
	sort.SliceStable(fs, func(i, j int) bool { return fs[i].Path != "" && fs[j].Path == "" })
	for i, f := range fs {
		if i == n {
			parts = append(parts, fmt.Sprintf("and %d more", len(r.Findings)-n))
			break
		}
		parts = append(parts, f.String())
	}
	return strings.Join(parts, "; ")
}

type analysis struct {
	r     Report
	paths []string // every option path defined (for tests against Nix)
}

func (a *analysis) add(line int, path []string, what string) {
	a.r.Findings = append(a.r.Findings, Finding{Line: line, Path: formatPath(path), What: what})
}

// Analyze checks a hardware configuration. Every string in the report is
// sanitized (safe to print).
func Analyze(src []byte) Report { return analyze(src).r }

func analyze(src []byte) *analysis {
	a := &analysis{}
	if len(src) > MaxSize {
		a.add(1, nil, fmt.Sprintf("%d bytes, more than %d: a generated hardware configuration is a few KiB", len(src), MaxSize))
		return a
	}
	for _, e := range checkText(string(src)) {
		a.add(e.Line, nil, e.Msg)
	}
	toks, err := lex(string(src))
	if err != nil {
		if le, ok := err.(*LexError); ok {
			a.add(le.Line, nil, le.Msg)
		} else {
			a.add(1, nil, err.Error())
		}
		return a.finish()
	}
	formals, binds, errs := parseModule(toks)
	for _, e := range errs {
		a.add(e.line, nil, e.msg)
	}
	for _, f := range formals {
		switch f {
		case "config", "lib", "pkgs", "modulesPath", "...":
		default:
			a.add(toks[0].line, nil, "the function takes "+ui.Sanitize(f, 40)+": nixos-generate-config writes { config, lib, pkgs, modulesPath, ... }")
		}
	}
	a.walk(nil, binds)
	return a.finish()
}

func (a *analysis) finish() *analysis {
	sort.SliceStable(a.r.Findings, func(i, j int) bool { return a.r.Findings[i].Line < a.r.Findings[j].Line })
	sort.Strings(a.r.Options)
	a.r.Options = compact(a.r.Options)
	return a
}

func compact(s []string) []string {
	var out []string
	for i, x := range s {
		if i == 0 || x != s[i-1] {
			out = append(out, x)
		}
	}
	return out
}

// walk flattens nested attribute sets into option paths.
func (a *analysis) walk(prefix []string, binds []binding) {
	for _, b := range binds {
		path := append(append([]string(nil), prefix...), b.path...)
		if len(path) == 1 && path[0] == "imports" {
			a.imports(b)
			continue
		}
		if set, ok := b.value.(attrsNode); ok {
			a.walk(path, set.binds)
			continue
		}
		a.leaf(path, b.value, b.l)
	}
}

// leaf checks one option definition.
func (a *analysis) leaf(path []string, v node, line int) {
	a.paths = append(a.paths, strings.Join(path, "\x1f"))
	// lib.mkDefault x is what the generator writes for defaults.
	if app, ok := v.(appNode); ok && isRef(app.fn, "lib", "mkDefault") && len(app.args) == 1 {
		v = app.args[0]
	}
	r := lookup(path)
	if r == nil {
		what := describePath(path)
		if app, ok := v.(appNode); ok {
			what += "; " + describeCall(app)
		}
		a.add(line, path, what)
		return
	}
	if app, ok := v.(appNode); ok {
		a.add(line, path, describeCall(app))
		return
	}
	if problem := r.check(v); problem != "" {
		a.add(line, path, problem)
		return
	}
	a.r.Options = append(a.r.Options, r.name)
}

// imports: only the modules nixos-generate-config imports.
func (a *analysis) imports(b binding) {
	list, ok := b.value.(listNode)
	if !ok {
		a.add(b.l, []string{"imports"}, "expects a list of NixOS modules, "+found(b.value))
		return
	}
	for _, e := range list.elems {
		if sum, ok := e.(plusNode); ok && len(sum.terms) == 2 && isRef(sum.terms[0], "modulesPath") {
			if s, ok := sum.terms[1].(strNode); ok && allowedImports[s.s] {
				a.r.Options = append(a.r.Options, "imports")
				continue
			}
		}
		what := "imports " + ui.Sanitize(render(e), 80) + ": nixos-generate-config only imports " + strings.Join(sortedKeys(allowedImports), ", ") + " (from modulesPath)"
		if p, ok := e.(pathNode); ok {
			what = "imports the file " + ui.Sanitize(p.p, 80) + ": a hardware configuration imports no other file"
		}
		a.add(e.line(), []string{"imports"}, what)
	}
}

func sortedKeys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func isRef(n node, path ...string) bool {
	r, ok := n.(refNode)
	if !ok || len(r.path) != len(path) {
		return false
	}
	for i := range path {
		if r.path[i] != path[i] {
			return false
		}
	}
	return true
}

// describeCall says what a function application does.
func describeCall(app appNode) string {
	r, ok := app.fn.(refNode)
	if !ok {
		return "a function call: nixos-generate-config writes plain values"
	}
	name := strings.Join(r.path, ".")
	if len(r.path) == 2 && r.path[0] == "lib" {
		switch r.path[1] {
		case "mkForce", "mkOverride", "mkVMOverride", "mkImageMediaOverride":
			return "set with lib." + r.path[1] + ", which overrides every other definition of it (your configuration.nix included)"
		case "mkIf", "mkMerge", "mkBefore", "mkAfter", "mkOrder", "mkOptionDefault":
			return "set with lib." + r.path[1] + ": nixos-generate-config writes plain values (and lib.mkDefault)"
		case "mkDefault":
			return "lib.mkDefault with " + strconv.Itoa(len(app.args)) + " arguments"
		}
	}
	switch {
	case r.path[0] == "builtins" || r.path[0] == "import" || r.path[0] == "scopedImport" || r.path[0] == "derivation" || strings.HasPrefix(r.path[0], "fetch"):
		return "calls " + ui.Sanitize(name, 60) + ", which can read files, fetch from the network or build while the configuration is evaluated"
	case r.path[0] == "pkgs":
		return "refers to packages (" + ui.Sanitize(name, 60) + "): nixos-generate-config writes none"
	}
	return "calls " + ui.Sanitize(name, 60) + ": nixos-generate-config writes plain values"
}

// formatPath renders an attribute path as Nix would, sanitized.
func formatPath(path []string) string {
	var parts []string
	for _, p := range path {
		if identRE.FindString(p) == p && p != "" {
			parts = append(parts, p)
		} else {
			parts = append(parts, `"`+ui.Sanitize(strings.ReplaceAll(p, `"`, `\"`), 60)+`"`)
		}
	}
	return strings.Join(parts, ".")
}
