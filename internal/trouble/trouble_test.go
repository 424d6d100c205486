package trouble

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// anchor is GitHub's anchor of a Markdown heading.
func anchor(heading string) string {
	h := strings.ToLower(strings.TrimSpace(heading))
	var b strings.Builder
	for _, r := range h {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteRune('-')
		}
	}
	return b.String()
}

func repo(t *testing.T) string {
	t.Helper()
	return filepath.Join("..", "..")
}

// Every section the code names has a heading in the guide.
func TestEverySectionExists(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repo(t), File))
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "## ") {
			anchors[anchor(line[3:])] = true
		}
	}
	for _, s := range Sections() {
		if !anchors[s] {
			t.Errorf("%s has no section #%s", File, s)
		}
	}
	// Links inside the guide point to existing sections.
	for _, m := range regexp.MustCompile(`\]\(#([a-z0-9-]+)\)`).FindAllStringSubmatch(string(data), -1) {
		if !anchors[m[1]] {
			t.Errorf("broken link #%s in %s", m[1], File)
		}
	}
}

// Every constant is listed in Sections, and every trouble.X the code uses is
// one of them.
func TestCodeUsesKnownSections(t *testing.T) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "trouble.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	consts := map[string]string{}
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, sp := range g.Specs {
			vs := sp.(*ast.ValueSpec)
			for i, n := range vs.Names {
				if lit, ok := vs.Values[i].(*ast.BasicLit); ok {
					v, _ := strconv.Unquote(lit.Value)
					consts[n.Name] = v
				}
			}
		}
	}
	listed := map[string]bool{}
	for _, s := range Sections() {
		listed[s] = true
	}
	for name, v := range consts {
		if name != "File" && !listed[v] {
			t.Errorf("constant %s is not in Sections()", name)
		}
	}
	used := 0
	ref := regexp.MustCompile(`trouble\.([A-Z][A-Za-z]*)`)
	for _, dir := range []string{"internal", "magefiles"} {
		filepath.Walk(filepath.Join(repo(t), dir), func(p string, info os.FileInfo, err error) error {
			if err != nil || info.IsDir() || !strings.HasSuffix(p, ".go") || strings.Contains(p, "/trouble/") {
				return nil
			}
			src, _ := os.ReadFile(p)
			for _, m := range ref.FindAllStringSubmatch(string(src), -1) {
				switch m[1] {
				case "See", "File", "Sections":
					continue
				}
				used++
				if _, ok := consts[m[1]]; !ok {
					t.Errorf("%s uses unknown section trouble.%s", p, m[1])
				}
			}
			return nil
		})
	}
	if used < 20 {
		t.Errorf("only %d references to sections in the code", used)
	}
}
