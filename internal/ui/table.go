package ui

import (
	"strings"

	"github.com/rivo/uniseg"
)

// palette are the only escape sequences a table cell may carry: the colours
// this package paints with.
var palette = []string{red, green, yellow, bold, reset}

type cell struct {
	text  string
	width int // terminal columns
}

// tableCell renders c for a table: our own colour codes kept, all other text
// sanitized, at most max columns wide (cut with "…").
func tableCell(c string, max int, color bool) cell {
	type tok struct {
		s    string
		w    int
		code bool
	}
	var toks []tok
	total := 0
	for len(c) > 0 && total <= max {
		if code := paletteCode(c); code != "" && color {
			toks = append(toks, tok{s: code, code: true})
			c = c[len(code):]
			continue
		}
		// The text up to the next escape character, sanitized; only as
		// much of it as can fill the cell is looked at.
		end := strings.IndexByte(c[1:], 0x1b) + 1
		if end == 0 {
			end = len(c)
		}
		seg := c[:end]
		c = c[end:]
		g := uniseg.NewGraphemes(Sanitize(seg, max+1))
		for total <= max && g.Next() {
			toks = append(toks, tok{s: g.Str(), w: g.Width()})
			total += g.Width()
		}
	}
	var b strings.Builder
	width := 0
	painted := false
	for _, t := range toks {
		if t.code {
			b.WriteString(t.s)
			painted = t.s != reset
			continue
		}
		if total > max && width+t.w > max-1 {
			b.WriteString("…")
			width++
			if painted {
				b.WriteString(reset)
			}
			break
		}
		b.WriteString(t.s)
		width += t.w
	}
	return cell{b.String(), width}
}

func paletteCode(s string) string {
	if len(s) == 0 || s[0] != 0x1b {
		return ""
	}
	for _, p := range palette {
		if strings.HasPrefix(s, p) {
			return p
		}
	}
	return ""
}
