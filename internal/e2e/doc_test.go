package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/monibahmed/nixos-config/internal/testutil"
)

// docExamples returns the commands of the README's code blocks marked
// <!-- doctest -->.
func docExamples(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(testutil.RepoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var cmds []string
	marked, in := false, false
	for _, line := range strings.Split(string(data), "\n") {
		switch {
		case strings.TrimSpace(line) == "<!-- doctest -->":
			marked = true
		case marked && strings.HasPrefix(line, "```"):
			if in {
				marked, in = false, false
			} else {
				in = true
			}
		case in && strings.TrimSpace(line) != "" && !strings.HasPrefix(line, "#"):
			cmds = append(cmds, strings.TrimSpace(line))
		}
	}
	return cmds
}

// The README's runnable examples work as written (against a lab of their
// own: its name and subnet are substituted so it cannot meet another lab).
func TestReadmeExamples(t *testing.T) {
	requireLabPrereqs(t)
	requireNix(t)
	cmds := docExamples(t)
	if len(cmds) < 5 {
		t.Fatalf("only %d README examples found", len(cmds))
	}
	dir := testutil.CopyRepo(t)
	t.Cleanup(func() { mage(t, dir, "lab:down") })
	for _, c := range cmds {
		if !strings.HasPrefix(c, "mage ") {
			t.Fatalf("README example %q: only mage commands can be run", c)
		}
		c = strings.ReplaceAll(c, "10.77.0.", "10.77.70.")
		args := shellWords(strings.TrimPrefix(c, "mage "))
		if args[0] == "lab:up" {
			args = append(args, "-name=doc", "-subnet=10.77.70.0/24")
		}
		r := mage(t, dir, args...)
		if r.Code != 0 {
			t.Fatalf("README example `%s` failed (exit %d):\n%s", c, r.Code, r.Combined())
		}
		switch args[0] {
		case "deployAll":
			if !regexp.MustCompile(`lab-server\s+10\.77\.70\.11\s+ok\s+1`).MatchString(r.Stdout) {
				t.Errorf("deployAll:\n%s", r.Stdout)
			}
		case "exec":
			if !regexp.MustCompile(`(?m)^lab-server +\| 26\.11pre-double$`).MatchString(r.Stdout) {
				t.Errorf("exec:\n%s", r.Stdout)
			}
		case "status":
			if !strings.Contains(r.Stdout, "up to date") {
				t.Errorf("status:\n%s", r.Stdout)
			}
		case "discover:subnet":
			if !strings.Contains(r.Stdout, "lab-server (by address)") {
				t.Errorf("discover:\n%s", r.Stdout)
			}
		}
	}
}

// Every target the README's tables name is listed by `mage -l` and answered
// by `mage -h <name>`, and every listed target is in the README: one name
// for each target everywhere (no alias that -h would not know).
func TestReadmeTargetNamesMatchMage(t *testing.T) {
	testutil.RequireTools(t, "go", "git")
	data, err := os.ReadFile(filepath.Join(testutil.RepoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	// First column of the README's target tables: | `name` (also `alias`) | ...
	row := regexp.MustCompile("(?m)^\\| `([a-zA-Z:]+)`((?: \\(also `[a-zA-Z:]+`\\))?) \\|")
	readme := map[string]bool{}
	for _, m := range row.FindAllStringSubmatch(string(data), -1) {
		readme[m[1]] = true
		for _, a := range regexp.MustCompile("`([a-zA-Z:]+)`").FindAllStringSubmatch(m[2], -1) {
			readme[a[1]] = true
		}
	}
	bin := testutil.MageBinary(t)
	dir := testutil.RepoRoot(t)
	list := testutil.Run(t, dir, nil, bin, "-l")
	if list.Code != 0 {
		t.Fatalf("mage -l: %s", list.Combined())
	}
	listed := map[string]bool{}
	for _, l := range strings.Split(list.Stdout, "\n") {
		if f := strings.Fields(l); len(l) > 2 && l[:2] == "  " && len(f) > 0 {
			listed[f[0]] = true
		}
	}
	if len(listed) < 15 {
		t.Fatalf("mage -l lists only %v", listed)
	}
	for name := range readme {
		if !listed[name] {
			t.Errorf("the README names %q, mage -l does not list it", name)
		}
		if r := testutil.Run(t, dir, nil, bin, "-h", name); r.Code != 0 || !strings.Contains(r.Stdout, "mage "+strings.ToLower(name)) {
			t.Errorf("mage -h %s: exit %d\n%s", name, r.Code, r.Combined())
		}
	}
	for name := range listed {
		if !readme[name] {
			t.Errorf("mage -l lists %q, the README's tables do not", name)
		}
	}
}

// shellWords splits a command line as sh does for words and single-quoted
// strings (all the README's examples use).
func shellWords(line string) []string {
	var words []string
	var cur strings.Builder
	in, quoted := false, false
	for _, r := range line {
		switch {
		case r == '\'':
			quoted, in = !quoted, true
		case r == ' ' && !quoted:
			if in {
				words = append(words, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	if in {
		words = append(words, cur.String())
	}
	return words
}

// The quick start's commands (the demo, the tests) each have a form that
// runs them as root with the caller's PATH: sudo's secure_path and the PATH
// of `sudo -i` lack /usr/local/go/bin, so `sudo go …` finds no Go.
func TestReadmeSudoKeepsGoOnPath(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(testutil.RepoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	readme := string(data)
	_, quick, ok := strings.Cut(readme, "## Quick start")
	if !ok {
		t.Fatal("the README has no quick start section")
	}
	quick, _, _ = strings.Cut(quick, "\n## ")
	var cmds []string
	for _, m := range regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(quick, -1) {
		for _, line := range strings.Split(m[1], "\n") {
			if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
				cmds = append(cmds, line)
			}
		}
	}
	if len(cmds) != 2 {
		t.Fatalf("the quick start's commands: %q, want the demo and the tests", cmds)
	}
	// The README wraps lines: compare with single spaces.
	flat := strings.Join(strings.Fields(readme), " ")
	for _, c := range cmds {
		if want := `sudo env PATH="$PATH" ` + c; !strings.Contains(flat, want) {
			t.Errorf("the README does not say how to run %q as root: want `%s`", c, want)
		}
	}
	if !strings.Contains(flat, "export PATH=/usr/local/go/bin:$PATH") {
		t.Error("the README does not say how to find Go in a root shell (sudo -i)")
	}
}

// docs/ci.md stays true to .ci/run: the suites it runs by default, every
// package of its race step, and one result line in the form the lead
// updates after each full run.
func TestCIDocMatchesScript(t *testing.T) {
	root := testutil.RepoRoot(t)
	script, err := os.ReadFile(filepath.Join(root, ".ci", "run"))
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile(filepath.Join(root, "docs", "ci.md"))
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "(docs/ci.md)") {
		t.Error("the README does not link docs/ci.md")
	}
	m := regexp.MustCompile(`suites=\(([a-z ]+)\)`).FindStringSubmatch(string(script))
	if m == nil {
		t.Fatal(".ci/run names no default suites")
	}
	for _, s := range strings.Fields(m[1]) {
		if !regexp.MustCompile(`\| ` + s + ` \| 2\.\d+\.\d+ \|`).Match(doc) {
			t.Errorf("docs/ci.md lacks the suite %s and its Nix version", s)
		}
	}
	// The race step's command, with its continuation lines.
	_, race, _ := strings.Cut(string(script), "go test -race")
	lines := strings.SplitAfter(race, "\n")
	for i, l := range lines {
		if !strings.HasSuffix(l, "\\\n") {
			race = strings.Join(lines[:i+1], "")
			break
		}
	}
	pkgs := regexp.MustCompile(`\./(internal/[a-z/.]+?)/?(?:\s|$)`).FindAllStringSubmatch(race, -1)
	if len(pkgs) < 5 {
		t.Fatalf("the race step's packages: %q", race)
	}
	for _, p := range pkgs {
		if !strings.Contains(string(doc), "`"+p[1]+"`") {
			t.Errorf("docs/ci.md does not list the race step's package %s", p[1])
		}
	}
	res := regexp.MustCompile(`(?m)^on [0-9a-f]{7,40}: (\d+) passed, (\d+) failed, (\d+) skipped per suite \((\d+) total\), \d+ s$`).FindAllSubmatch(doc, -1)
	if len(res) != 1 {
		t.Fatalf("docs/ci.md has %d result lines, want 1 (on <commit>: N passed, F failed, S skipped per suite (T total), D s)", len(res))
	}
	var n [4]int
	for i := range n {
		n[i], _ = strconv.Atoi(string(res[0][i+1]))
	}
	if n[3] != len(strings.Fields(m[1]))*(n[0]+n[1]+n[2]) {
		t.Errorf("docs/ci.md: the total %d is not %d suites of %d tests", n[3], len(strings.Fields(m[1])), n[0]+n[1]+n[2])
	}
}
