package hwconfig

import (
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/monibahmed/nixos-config/internal/ui"
)

// The lexer reads the part of the Nix language a hardware configuration
// uses, token by token as Nix's own lexer (src/libexpr/lexer.l) would:
// identifiers, integers, double-quoted strings without interpolation, paths,
// punctuation and operators, comments. Everything else (indented strings,
// interpolation, floats, URIs) is an error that ends the analysis, so that
// no construct can be read one way here and another way by Nix.

type kind int

const (
	tEOF kind = iota
	tIdent
	tInt
	tString
	tPath // ./x, /x, ~/x, <x>
	tPunct
)

type token struct {
	kind kind
	text string // identifier, punctuation, path; a string's decoded value
	line int
}

func (t token) String() string {
	switch t.kind {
	case tEOF:
		return "the end of the file"
	case tString:
		return fmt.Sprintf("%q", ui.Sanitize(t.text, 40))
	}
	return "`" + ui.Sanitize(t.text, 40) + "`"
}

// LexError is input the analysis does not read.
type LexError struct {
	Line int
	Msg  string
}

func (e *LexError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Msg) }

var (
	identRE = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_'-]*`)
	intRE   = regexp.MustCompile(`^[0-9]+`)
	floatRE = regexp.MustCompile(`^(([1-9][0-9]*\.[0-9]*)|(0?\.[0-9]+))([Ee][+-]?[0-9]+)?`)
	// Nix: PATH_CHAR [a-zA-Z0-9\.\_\-\+]; PATH {PATH_CHAR}*(\/{PATH_CHAR}+)+\/?
	// HPATH \~(\/{PATH_CHAR}+)+\/?  SPATH \<{PATH_CHAR}+(\/{PATH_CHAR}+)*\>
	pathRE  = regexp.MustCompile(`^[a-zA-Z0-9._+-]*(/[a-zA-Z0-9._+-]+)+/?`)
	hpathRE = regexp.MustCompile(`^~(/[a-zA-Z0-9._+-]+)+/?`)
	spathRE = regexp.MustCompile(`^<[a-zA-Z0-9._+-]+(/[a-zA-Z0-9._+-]+)*>`)
	// URI {[a-zA-Z][a-zA-Z0-9\+\-\.]*\:[a-zA-Z0-9\%\/\?\:\@\&\=\+\$\,\-\_\.\!\~\*\']+}
	uriRE = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9+.-]*:[a-zA-Z0-9%/?:@&=+$,_.!~*'-]+`)
)

// Operators, longest first.
var puncts = []string{"...", "//", "++", "==", "!=", "<=", ">=", "&&", "||", "->", "${",
	"{", "}", "[", "]", "(", ")", ";", ":", ",", ".", "=", "@", "?", "+", "-", "*", "/", "<", ">", "!"}

// checkText refuses bytes a hardware configuration never contains and that
// can hide or reorder text on a terminal: control characters other than
// newline and tab, invalid UTF-8, bidirectional and invisible formatting
// characters. It returns one error per line that has any.
func checkText(src string) []*LexError {
	var errs []*LexError
	line := 1
	reported := 0
	for i := 0; i < len(src); {
		r, size := utf8.DecodeRuneInString(src[i:])
		bad := ""
		switch {
		case r == '\n':
			line++
		case r == '\t':
		case r == utf8.RuneError && size <= 1:
			bad = fmt.Sprintf(`invalid UTF-8 byte \x%02x`, src[i])
		case !ui.IsClean(string(r)):
			bad = "control character " + ui.Sanitize(string(r), 0)
		}
		if bad != "" && reported != line {
			reported = line
			errs = append(errs, &LexError{line, bad + ": it can hide or rewrite text on a terminal, and nixos-generate-config never writes one"})
		}
		i += size
	}
	return errs
}

// lex splits src into tokens.
func lex(src string) ([]token, error) {
	var toks []token
	line := 1
	i := 0
	for i < len(src) {
		c := src[i]
		rest := src[i:]
		switch {
		case c == '\n':
			line++
			i++
			continue
		case c == ' ' || c == '\t' || c == '\r':
			i++
			continue
		case c == '#':
			end := strings.IndexByte(rest, '\n')
			if end < 0 {
				end = len(rest)
			}
			i += end
			continue
		case strings.HasPrefix(rest, "/*"):
			end := strings.Index(rest[2:], "*/")
			if end < 0 {
				return nil, &LexError{line, "unterminated /* comment"}
			}
			line += strings.Count(rest[:end+4], "\n")
			i += end + 4
			continue
		case c == '"':
			s, n, nl, err := lexString(rest, line)
			if err != nil {
				return nil, err
			}
			toks = append(toks, token{tString, s, line})
			line += nl
			i += n
			continue
		case strings.HasPrefix(rest, "''"):
			return nil, &LexError{line, "an indented string ('' … ''): nixos-generate-config writes none"}
		}
		// Longest match among the token classes, as flex does.
		best, bestKind := "", tEOF
		try := func(m string, k kind) {
			if len(m) > len(best) {
				best, bestKind = m, k
			}
		}
		try(identRE.FindString(rest), tIdent)
		try(intRE.FindString(rest), tInt)
		try(pathRE.FindString(rest), tPath)
		try(hpathRE.FindString(rest), tPath)
		try(spathRE.FindString(rest), tPath)
		if f := floatRE.FindString(rest); len(f) > len(best) {
			return nil, &LexError{line, "a floating-point number: nixos-generate-config writes none"}
		}
		if u := uriRE.FindString(rest); len(u) > len(best) {
			return nil, &LexError{line, "a URI (" + ui.Sanitize(u, 40) + "): nixos-generate-config writes none"}
		}
		if best != "" {
			toks = append(toks, token{bestKind, best, line})
			i += len(best)
			continue
		}
		matched := false
		for _, p := range puncts {
			if strings.HasPrefix(rest, p) {
				if p == "${" {
					return nil, &LexError{line, "an interpolation ${…}: nixos-generate-config writes none"}
				}
				toks = append(toks, token{tPunct, p, line})
				i += len(p)
				matched = true
				break
			}
		}
		if !matched {
			r, _ := utf8.DecodeRuneInString(rest)
			return nil, &LexError{line, "unexpected character " + ui.Sanitize(string(r), 0)}
		}
	}
	return append(toks, token{tEOF, "", line}), nil
}

// lexString reads a double-quoted string at the start of s: its value, its
// length in bytes, the newlines in it. Interpolation and "$" are refused
// (Nix gives "$${" and "\$" meanings of their own: no guessing here).
func lexString(s string, line int) (string, int, int, error) {
	var b strings.Builder
	nl := 0
	for i := 1; i < len(s); i++ {
		switch c := s[i]; c {
		case '"':
			return b.String(), i + 1, nl, nil
		case '$':
			return "", 0, 0, &LexError{line + nl, "a \"$\" in a string (interpolation): nixos-generate-config writes none"}
		case '\\':
			if i+1 >= len(s) {
				return "", 0, 0, &LexError{line + nl, "unterminated string"}
			}
			i++
			switch s[i] {
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 't':
				b.WriteByte('\t')
			case '\n':
				nl++
				b.WriteByte('\n')
			default:
				b.WriteByte(s[i])
			}
		case '\n':
			nl++
			b.WriteByte(c)
		default:
			b.WriteByte(c)
		}
	}
	return "", 0, 0, &LexError{line, "unterminated string"}
}
