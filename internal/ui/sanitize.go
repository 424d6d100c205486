package ui

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Text from remote sources (a target's command output, its history file,
// a scanned host's banner, a fetched file) is untrusted: it may carry
// terminal escape sequences (colours, hidden text, screen clears, window
// titles, hyperlinks), carriage returns that overwrite what was printed
// before, bidirectional-text overrides that reorder what is displayed, and
// it may be arbitrarily long. Everything of it that is shown to a person goes
// through Sanitize or SanitizeLines, on a terminal and off it.

// Length limits for untrusted text.
const (
	// MaxCell is the widest a table cell is shown (in terminal columns).
	MaxCell = 64
	// MaxLine is the longest a line of untrusted text is shown (in runes).
	MaxLine = 512
)

// Sanitize returns s as one line that is safe to print, at most max runes
// long (max <= 0: MaxLine): every control character, escape sequence
// introducer, invisible formatting character and invalid UTF-8 byte is made
// visible as a Go-style escape (ESC becomes `\x1b`, CR `\r`, newline `\n`,
// U+202E `\u202e`, an invalid byte `\xff`). Text cut off is marked with
// "…(+N bytes)". The cost is bounded by max, not by len(s).
func Sanitize(s string, max int) string {
	if max <= 0 {
		max = MaxLine
	}
	var b strings.Builder
	n := 0 // runes written
	i := 0
	for i < len(s) && n < max {
		r, size := utf8.DecodeRuneInString(s[i:])
		var esc string
		if r == utf8.RuneError && size <= 1 {
			esc = fmt.Sprintf(`\x%02x`, s[i])
		} else {
			esc = escapeRune(r)
		}
		if esc == "" {
			b.WriteRune(r)
			n++
		} else {
			if n+len(esc) > max {
				break
			}
			b.WriteString(esc)
			n += len(esc)
		}
		i += size
	}
	if i < len(s) {
		fmt.Fprintf(&b, "…(+%d bytes)", len(s)-i)
	}
	return b.String()
}

// SanitizeLines splits untrusted multi-line text into at most maxLines
// lines (the last ones, where a failure usually is; maxLines <= 0: all),
// each sanitized by Sanitize to maxWidth runes. "\r\n" and "\n" end lines;
// a lone "\r" is shown as `\r`. Only the last 1 MiB of s is looked at.
func SanitizeLines(s string, maxLines, maxWidth int) []string {
	const window = 1 << 20
	skipped := 0
	if len(s) > window {
		skipped = len(s) - window
		s = s[skipped:]
	}
	s = strings.TrimRight(s, "\r\n")
	if s == "" {
		return nil
	}
	lines := strings.Split(s, "\n")
	dropped := 0
	if maxLines > 0 && len(lines) > maxLines {
		dropped = len(lines) - maxLines
		lines = lines[dropped:]
	}
	out := make([]string, 0, len(lines)+1)
	if dropped > 0 || skipped > 0 {
		msg := fmt.Sprintf("…(%d earlier lines not shown)", dropped)
		if skipped > 0 {
			msg = fmt.Sprintf("…(%d earlier bytes not shown)", skipped)
		}
		out = append(out, msg)
	}
	for _, l := range lines {
		out = append(out, Sanitize(strings.TrimSuffix(l, "\r"), maxWidth))
	}
	return out
}

// escapeRune returns the visible form of r, or "" when r prints as itself.
func escapeRune(r rune) string {
	switch r {
	case '\n':
		return `\n`
	case '\r':
		return `\r`
	case '\t':
		return `\t`
	case '\a':
		return `\a`
	case '\b':
		return `\b`
	case '\f':
		return `\f`
	case '\v':
		return `\v`
	}
	switch {
	case r < 0x20 || r == 0x7f:
		return fmt.Sprintf(`\x%02x`, r)
	case r >= 0x80 && r <= 0x9f: // C1 controls: U+009B is CSI on some terminals
		return fmt.Sprintf(`\u%04x`, r)
	case unicode.Is(unicode.Cf, r), // bidi overrides and isolates, zero-width characters, BOM
		r == 0x2028, r == 0x2029, // line and paragraph separators
		unicode.Is(unicode.Noncharacter_Code_Point, r):
		return fmt.Sprintf(`\u%04x`, r)
	}
	return ""
}

// IsClean reports whether s prints as itself: Sanitize would not change it
// (ignoring its length).
func IsClean(s string) bool {
	for i, r := range s {
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(s[i:]); size <= 1 {
				return false
			}
		}
		if escapeRune(r) != "" {
			return false
		}
	}
	return true
}

// safeLines is the last line of defence for text this package prints
// (Printer.Linef): newlines and tabs stay, our own colour codes too when
// colour is on, every other control character and escape sequence is made
// visible as Sanitize does. Its length is not bounded: remote text must be
// bounded by Sanitize first.
func safeLines(s string, color bool) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 && c != '\n' && c != '\t' || c == 0x7f || c >= 0x80 {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		if code := paletteCode(s[i:]); code != "" && color {
			b.WriteString(code)
			i += len(code)
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\n' || r == '\t':
			b.WriteRune(r)
		default:
			if esc := escapeRune(r); esc != "" {
				b.WriteString(esc)
			} else {
				b.WriteRune(r)
			}
		}
		i += size
	}
	return b.String()
}

// SanitizeError wraps err (which may quote remote output: a command's
// stderr, a peer's disconnect message) so that its message is sanitized and
// at most max runes long; errors.Is/As still see err.
func SanitizeError(err error, max int) error {
	if err == nil {
		return nil
	}
	return &sanitizedError{msg: Sanitize(err.Error(), max), err: err}
}

type sanitizedError struct {
	msg string
	err error
}

func (e *sanitizedError) Error() string { return e.msg }
func (e *sanitizedError) Unwrap() error { return e.err }
