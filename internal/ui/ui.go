// Package ui renders the toolkit's output: plain timestamped lines when the
// output is not a terminal, colour (unless NO_COLOR is set) and progress bars
// when it is, and tables.
package ui

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"
)

// Printer writes progress and status lines. It is safe for concurrent use.
type Printer struct {
	W     io.Writer
	TTY   bool // the writer is a terminal: no timestamps, bars allowed
	Color bool // ANSI colours allowed
	Now   func() time.Time

	mu sync.Mutex
}

// New inspects w: a terminal gets colours (unless NO_COLOR is set, see
// https://no-color.org) and no timestamps; anything else gets plain
// timestamped lines without escape codes.
func New(w io.Writer) *Printer {
	p := &Printer{W: w, Now: time.Now}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.TTY = true
		p.Color = colorAllowed()
	}
	return p
}

func colorAllowed() bool { return os.Getenv("NO_COLOR") == "" && os.Getenv("TERM") != "dumb" }

// colorWriter tells whether w takes colours (as New decides).
func colorWriter(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd())) && colorAllowed()
}

const (
	red    = "\x1b[31m"
	green  = "\x1b[32m"
	yellow = "\x1b[33m"
	bold   = "\x1b[1m"
	reset  = "\x1b[0m"
)

func (p *Printer) paint(code, s string) string {
	if !p.Color {
		return s
	}
	return code + s + reset
}

// Linef writes one line; off a terminal it starts with a UTC timestamp.
// Control characters and escape sequences other than this package's colours
// (these too when colour is off) are shown escaped (see Sanitize), newlines
// and tabs are kept; text from a remote source must still be bounded with
// Sanitize before it is passed in.
func (p *Printer) Linef(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	msg := safeLines(fmt.Sprintf(format, args...), p.Color)
	if !p.TTY {
		now := time.Now
		if p.Now != nil {
			now = p.Now
		}
		msg = now().UTC().Format("2006-01-02T15:04:05Z") + " " + msg
	}
	fmt.Fprintln(p.W, msg)
}

// OK renders s as success.
func (p *Printer) OK(s string) string { return p.paint(green, s) }

// Bad renders s as failure.
func (p *Printer) Bad(s string) string { return p.paint(red, s) }

// Warning renders s as a warning.
func (p *Printer) Warning(s string) string { return p.paint(yellow, s) }

// Bold renders s in bold.
func (p *Printer) Bold(s string) string { return p.paint(bold, s) }

// Table writes rows aligned in columns under a header. Cells are shown as
// one line of at most MaxCell columns: the colour codes of this package
// (OK, Bad, Warning, Bold) are kept and take no width when w takes colours
// (a terminal, no NO_COLOR), everything else is passed through Sanitize, so
// a cell never carries a raw control character and no row grows wider than
// the columns times MaxCell.
func Table(w io.Writer, header []string, rows [][]string) error {
	return TableMax(w, header, rows, MaxCell)
}

// TableMax is Table with cells of up to maxCell columns, for local data
// that is longer by nature (store paths).
func TableMax(w io.Writer, header []string, rows [][]string, maxCell int) error {
	return table(w, header, rows, maxCell, colorWriter(w))
}

// table: color keeps this package's colour codes.
func table(w io.Writer, header []string, rows [][]string, maxCell int, color bool) error {
	if maxCell < 2 {
		maxCell = MaxCell
	}
	all := append([][]string{header}, rows...)
	cells := make([][]cell, len(all))
	widths := make([]int, len(header))
	for i, r := range all {
		for j, c := range r {
			if j >= len(widths) {
				break
			}
			cl := tableCell(c, maxCell, color)
			cells[i] = append(cells[i], cl)
			if cl.width > widths[j] {
				widths[j] = cl.width
			}
		}
	}
	var b strings.Builder
	for _, r := range cells {
		for j, c := range r {
			b.WriteString(c.text)
			if j < len(r)-1 {
				b.WriteString(strings.Repeat(" ", widths[j]-c.width+2))
			}
		}
		b.WriteString("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}
