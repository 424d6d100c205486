package ui

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestPlainLinesAreTimestampedWithoutEscapes(t *testing.T) {
	var b bytes.Buffer
	p := New(&b) // a buffer is not a terminal
	p.Now = func() time.Time { return time.Date(2026, 11, 26, 1, 2, 3, 0, time.UTC) }
	p.Linef("%s %s", p.OK("ok"), p.Bad("failed"))
	if got := b.String(); got != "2026-11-26T01:02:03Z ok failed\n" {
		t.Fatalf("got %q", got)
	}
}

func TestColorOnlyWhenAllowed(t *testing.T) {
	p := &Printer{Color: true}
	if !strings.Contains(p.Bad("x"), "\x1b[31m") {
		t.Fatal("expected colour")
	}
	p.Color = false
	if p.Bad("x") != "x" {
		t.Fatal("expected no colour")
	}
}

func TestTable(t *testing.T) {
	var b bytes.Buffer
	if err := Table(&b, []string{"NAME", "ADDRESS"}, [][]string{{"lab-server", "192.168.1.50"}, {"x", "y"}}); err != nil {
		t.Fatal(err)
	}
	want := "NAME        ADDRESS\nlab-server  192.168.1.50\nx           y\n"
	if b.String() != want {
		t.Fatalf("got %q", b.String())
	}
}

func TestSanitize(t *testing.T) {
	for in, want := range map[string]string{
		"lab-server":                       "lab-server",
		"evil\x1b]0;pwned\a\x1b[2J\rlab":   `evil\x1b]0;pwned\a\x1b[2J\rlab`,
		"two\nlines\ttab":                  `two\nlines\ttab`,
		"bad\xffbyte":                      `bad\xffbyte`,
		"c1 \u009b31m":                     `c1 \u009b31m`,
		"rtl \u202eevil":                   `rtl \u202eevil`,
		"zero\u200bwidth\ufeff":            `zero\u200bwidth\ufeff`,
		"héllo wörld ✓ 日本":                 "héllo wörld ✓ 日本",
		"del\x7f":                          `del\x7f`,
		"\x00nul":                          `\x00nul`,
		"line\u2028sep":                    `line\u2028sep`,
		"back\\slash stays":                `back\slash stays`,
		"replacement char \ufffd is text":  "replacement char \ufffd is text",
		"\x1b[31mred\x1b[0m from a remote": `\x1b[31mred\x1b[0m from a remote`,
	} {
		if got := Sanitize(in, 0); got != want {
			t.Errorf("Sanitize(%q) = %q, want %q", in, got, want)
		}
		if IsClean(in) != (in == want) {
			t.Errorf("IsClean(%q) = %v", in, IsClean(in))
		}
	}
}

func TestSanitizeBoundsLength(t *testing.T) {
	huge := strings.Repeat("\x1b", 100<<20) // 100 MiB of escapes
	got := Sanitize(huge, 20)
	if want := `\x1b\x1b\x1b\x1b\x1b…(+104857595 bytes)`; got != want {
		t.Fatalf("got %q", got)
	}
	if got := Sanitize(strings.Repeat("a", 30), 10); got != "aaaaaaaaaa…(+20 bytes)" {
		t.Fatalf("got %q", got)
	}
	if got := Sanitize("short", 10); got != "short" {
		t.Fatalf("got %q", got)
	}
}

func TestSanitizeLines(t *testing.T) {
	got := SanitizeLines("one\r\ntwo\x1b[2K\rthree\nfour\n", 2, 0)
	want := []string{"…(1 earlier lines not shown)", `two\x1b[2K\rthree`, "four"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("got %q", got)
	}
	if SanitizeLines("\n", 3, 0) != nil {
		t.Fatal("empty text gives lines")
	}
	big := SanitizeLines(strings.Repeat("x", 3<<20), 0, 10)
	if len(big) != 2 || !strings.Contains(big[0], "earlier bytes not shown") || len(big[1]) > 40 {
		t.Fatalf("got %q", big)
	}
}

func TestTableSanitizesAndBoundsCells(t *testing.T) {
	p := &Printer{Color: true}
	var b bytes.Buffer
	err := table(&b, []string{"HOST", "KEY"}, [][]string{
		{"evil\x1b]0;pwned\a\x1b[2J\rlab-server", p.OK("known")},
		{strings.Repeat("h", 10<<20), p.Bad(strings.Repeat("x", 100))},
		{"日本語", "\x1b[8mhidden\x1b[0m"},
	}, MaxCell, true)
	if err != nil {
		t.Fatal(err)
	}
	out := b.String()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("lines: %q", lines)
	}
	// Only our own colour codes remain.
	stripped := out
	for _, c := range palette {
		stripped = strings.ReplaceAll(stripped, c, "")
	}
	for _, bad := range []string{"\x1b", "\a", "\r"} {
		if strings.Contains(stripped, bad) {
			t.Errorf("raw %q in table:\n%q", bad, out)
		}
	}
	if !strings.Contains(out, `evil\x1b]0;pwned\a\x1b[2J\rlab-server`) || !strings.Contains(out, `\x1b[8mhidden`+reset) {
		t.Errorf("escapes not shown:\n%s", out)
	}
	if !strings.Contains(out, green+"known"+reset) {
		t.Errorf("own colours lost:\n%q", out)
	}
	for _, l := range lines {
		if visible(l) > 2*(MaxCell+2) {
			t.Errorf("line %d columns wide: %q", visible(l), l)
		}
	}
	// A cut coloured cell is reset.
	if !strings.Contains(out, "…"+reset) {
		t.Errorf("cut colour not reset:\n%q", out)
	}
	// Wide characters are aligned by their width.
	if !strings.Contains(out, "日本語  ") {
		t.Errorf("wide characters:\n%s", out)
	}
}

func visible(s string) int {
	for _, c := range palette {
		s = strings.ReplaceAll(s, c, "")
	}
	return len([]rune(s))
}

func TestLinefEscapesForeignControls(t *testing.T) {
	var b bytes.Buffer
	p := &Printer{W: &b, TTY: true, Color: true}
	p.Linef("%s holder %s\nnext", p.OK("ok"), "evil\x1b]0;t\a\rx")
	if got, want := b.String(), green+"ok"+reset+` holder evil\x1b]0;t\a\rx`+"\nnext\n"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestSanitizeError(t *testing.T) {
	base := errors.New("remote said \x1b[2Jhi")
	err := SanitizeError(fmt.Errorf("step: %w", base), 0)
	if err.Error() != `step: remote said \x1b[2Jhi` || !errors.Is(err, base) {
		t.Fatalf("%q", err)
	}
	if SanitizeError(nil, 0) != nil {
		t.Fatal("nil")
	}
}

// Colour off (NO_COLOR, not a terminal): no escape byte at all, this
// package's colour codes included (remote text may carry them).
func TestColorOffEscapesPalette(t *testing.T) {
	var b bytes.Buffer
	p := &Printer{W: &b, Color: false, Now: func() time.Time { return time.Date(2026, 11, 26, 1, 2, 3, 0, time.UTC) }}
	p.Linef("%s from %s", p.Bad("failed"), "\x1b[31mred\x1b[0m")
	if got, want := b.String(), `2026-11-26T01:02:03Z failed from \x1b[31mred\x1b[0m`+"\n"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	b.Reset()
	if err := Table(&b, []string{"HOST", "KEY"}, [][]string{{"\x1b[31mlab\x1b[0m", p.OK("known")}}); err != nil {
		t.Fatal(err)
	}
	if got, want := b.String(), "HOST"+strings.Repeat(" ", 16)+"KEY\n"+`\x1b[31mlab\x1b[0m`+"  known\n"; got != want {
		t.Fatalf("table: got %q, want %q", got, want)
	}
}
