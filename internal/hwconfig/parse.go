package hwconfig

import (
	"fmt"
	"strings"
)

// The parser reads a NixOS module of the shape nixos-generate-config
// writes: an optional function header `{ config, lib, ... }:` and one
// attribute set of `path = value;` bindings. Values are literals, lists,
// attribute sets, references (config.x.y, lib.mkDefault) and function
// applications; `+` is read too. Anything else (let, with, rec, inherit, if,
// lambdas, other operators) is reported where it is and the binding skipped.

// node is a parsed value.
type node interface{ line() int }

type (
	strNode struct {
		s string
		l int
	}
	intNode struct {
		s string
		l int
	}
	pathNode struct {
		p string
		l int
	}
	// refNode: an identifier or a selection, e.g. true, config.boot.kernelPackages.x.
	refNode struct {
		path []string
		l    int
	}
	listNode struct {
		elems []node
		l     int
	}
	attrsNode struct {
		binds []binding
		l     int
	}
	appNode struct {
		fn   node
		args []node
		l    int
	}
	plusNode struct {
		terms []node
		l     int
	}
)

func (n strNode) line() int   { return n.l }
func (n intNode) line() int   { return n.l }
func (n pathNode) line() int  { return n.l }
func (n refNode) line() int   { return n.l }
func (n listNode) line() int  { return n.l }
func (n attrsNode) line() int { return n.l }
func (n appNode) line() int   { return n.l }
func (n plusNode) line() int  { return n.l }

type binding struct {
	path  []string
	value node
	l     int
}

// syntaxError is a construct outside what the parser reads.
type syntaxError struct {
	line int
	msg  string
}

var keywords = map[string]string{
	"let": "a let expression", "in": "a let expression", "with": "a with expression", "rec": "a recursive attribute set",
	"inherit": "inherit", "if": "a conditional (if)", "then": "a conditional (if)", "else": "a conditional (if)",
	"assert": "an assertion", "or": "a default (or)",
}

// maxDepth bounds the nesting of lists, attribute sets and parentheses
// (a generated file nests three deep).
const maxDepth = 32

type parser struct {
	toks  []token
	pos   int
	errs  []syntaxError
	depth int
}

func (p *parser) peek() token { return p.toks[p.pos] }
func (p *parser) next() token {
	t := p.toks[p.pos]
	if t.kind != tEOF {
		p.pos++
	}
	return t
}
func (p *parser) is(kind kind, text string) bool {
	t := p.peek()
	return t.kind == kind && t.text == text
}
func (p *parser) punct(s string) bool { return p.is(tPunct, s) }

type bail struct{ syntaxError }

func (p *parser) fail(t token, format string, args ...any) {
	panic(bail{syntaxError{t.line, fmt.Sprintf(format, args...)}})
}

func (p *parser) expect(s string) token {
	t := p.next()
	if t.kind != tPunct || t.text != s {
		p.fail(t, "expected `%s`, found %s", s, describe(t))
	}
	return t
}

func describe(t token) string {
	if t.kind == tIdent {
		if what, ok := keywords[t.text]; ok {
			return what + " (`" + t.text + "`)"
		}
	}
	return t.String()
}

// parseModule reads the whole file. Formals are the function's argument
// names ("..." included); nil when the file is no function.
func parseModule(toks []token) (formals []string, body []binding, errs []syntaxError) {
	p := &parser{toks: toks}
	defer func() {
		if r := recover(); r != nil {
			b, ok := r.(bail)
			if !ok {
				panic(r)
			}
			errs = append(p.errs, b.syntaxError)
		}
	}()
	if p.punct("{") && p.isHeader() {
		formals = p.header()
	} else if t := p.peek(); t.kind == tIdent && p.toks[p.pos+1].kind == tPunct && (p.toks[p.pos+1].text == ":" || p.toks[p.pos+1].text == "@") {
		p.fail(t, "a function of a single argument (%s:): nixos-generate-config writes `{ config, lib, ... }:`", t.text)
	}
	if !p.punct("{") {
		p.fail(p.peek(), "expected the module's attribute set `{ … }`, found %s", describe(p.peek()))
	}
	open := p.next()
	body = p.bindings(open)
	if t := p.next(); t.kind != tEOF {
		p.fail(t, "unexpected %s after the module's attribute set", describe(t))
	}
	return formals, body, p.errs
}

// isHeader: `{` starts a function header when its matching `}` is
// followed by `:` (or `@`).
func (p *parser) isHeader() bool {
	depth := 0
	for i := p.pos; i < len(p.toks); i++ {
		t := p.toks[i]
		if t.kind == tEOF {
			return false
		}
		if t.kind != tPunct {
			continue
		}
		switch t.text {
		case "{":
			depth++
		case "}":
			depth--
			if depth == 0 {
				n := p.toks[i+1]
				return n.kind == tPunct && (n.text == ":" || n.text == "@")
			}
		}
	}
	return false
}

func (p *parser) header() []string {
	p.expect("{")
	var names []string
	for !p.punct("}") {
		t := p.next()
		switch {
		case t.kind == tPunct && t.text == "...":
			names = append(names, "...")
		case t.kind == tIdent:
			if _, kw := keywords[t.text]; kw {
				p.fail(t, "unexpected %s in the function header", describe(t))
			}
			names = append(names, t.text)
			if p.punct("?") {
				p.fail(p.peek(), "a default value for the argument %s: nixos-generate-config writes none", t.text)
			}
		default:
			p.fail(t, "unexpected %s in the function header", describe(t))
		}
		if !p.punct("}") {
			p.expect(",")
		}
	}
	p.expect("}")
	if p.punct("@") {
		p.fail(p.peek(), "a named argument set (@): nixos-generate-config writes none")
	}
	p.expect(":")
	return names
}

// bindings reads `path = value;` up to the closing brace. A binding that
// does not parse is recorded and skipped to its `;`.
func (p *parser) bindings(open token) []binding {
	var out []binding
	for {
		t := p.peek()
		if t.kind == tEOF {
			p.fail(t, "the attribute set opened at line %d is not closed", open.line)
		}
		if p.punct("}") {
			p.next()
			return out
		}
		start := p.pos
		b, err := p.tryBinding()
		if err != nil {
			p.errs = append(p.errs, *err)
			if !p.skipBinding(start) {
				p.fail(p.peek(), "cannot read past the problem on line %d", err.line)
			}
			continue
		}
		out = append(out, b)
	}
}

func (p *parser) tryBinding() (b binding, err *syntaxError) {
	defer func() {
		if r := recover(); r != nil {
			e, ok := r.(bail)
			if !ok {
				panic(r)
			}
			err = &e.syntaxError
		}
	}()
	t := p.peek()
	if t.kind == tIdent && t.text == "inherit" {
		p.fail(t, "inherit: nixos-generate-config writes plain `name = value;` bindings")
	}
	path := p.attrPath()
	p.expect("=")
	v := p.expr()
	p.expect(";")
	return binding{path, v, t.line}, nil
}

// skipBinding moves past the `;` that ends the binding starting at start,
// at its nesting depth; false when there is none.
func (p *parser) skipBinding(start int) bool {
	depth := 0
	for i := start; i < len(p.toks); i++ {
		t := p.toks[i]
		if t.kind == tEOF {
			return false
		}
		if t.kind != tPunct {
			continue
		}
		switch t.text {
		case "{", "[", "(":
			depth++
		case "}", "]", ")":
			if depth == 0 {
				return false
			}
			depth--
		case ";":
			if depth == 0 {
				p.pos = i + 1
				return true
			}
		}
	}
	return false
}

func (p *parser) attrPath() []string {
	var path []string
	for {
		t := p.next()
		switch {
		case t.kind == tIdent:
			if _, kw := keywords[t.text]; kw && t.text != "or" {
				p.fail(t, "unexpected %s", describe(t))
			}
			path = append(path, t.text)
		case t.kind == tString:
			path = append(path, t.text)
		default:
			p.fail(t, "expected an attribute name, found %s", describe(t))
		}
		if !p.punct(".") {
			return path
		}
		p.next()
	}
}

// expr: app ('+' app)*
func (p *parser) expr() node {
	first := p.app()
	if !p.punct("+") {
		p.rejectOperator()
		return first
	}
	n := plusNode{terms: []node{first}, l: first.line()}
	for p.punct("+") {
		p.next()
		n.terms = append(n.terms, p.app())
	}
	p.rejectOperator()
	return n
}

func (p *parser) rejectOperator() {
	t := p.peek()
	if t.kind != tPunct {
		return
	}
	switch t.text {
	case "//", "++", "==", "!=", "<=", ">=", "&&", "||", "->", "-", "*", "/", "<", ">", "?", ":", "@":
		what := map[string]string{"//": "an attribute set update (//)", "++": "a list concatenation (++)", ":": "a function (:)", "?": "an attribute test (?)"}[t.text]
		if what == "" {
			what = "the operator " + t.text
		}
		p.fail(t, "%s: nixos-generate-config writes plain values", what)
	}
}

// app: primary primary*
func (p *parser) app() node {
	fn := p.primary()
	var args []node
	for p.startsPrimary() {
		args = append(args, p.primary())
	}
	if len(args) == 0 {
		return fn
	}
	return appNode{fn, args, fn.line()}
}

func (p *parser) startsPrimary() bool {
	t := p.peek()
	switch t.kind {
	case tIdent:
		_, kw := keywords[t.text]
		return !kw
	case tInt, tString, tPath:
		return true
	case tPunct:
		return t.text == "{" || t.text == "[" || t.text == "("
	}
	return false
}

func (p *parser) primary() node {
	t := p.next()
	if p.depth >= maxDepth {
		p.fail(t, "nested more than %d deep", maxDepth)
	}
	p.depth++
	defer func() { p.depth-- }()
	switch t.kind {
	case tString:
		return strNode{t.text, t.line}
	case tInt:
		return intNode{t.text, t.line}
	case tPath:
		return pathNode{t.text, t.line}
	case tIdent:
		if _, kw := keywords[t.text]; kw {
			p.fail(t, "%s: nixos-generate-config writes plain values", describe(t))
		}
		path := []string{t.text}
		for p.punct(".") {
			p.next()
			s := p.next()
			if s.kind != tIdent && s.kind != tString {
				p.fail(s, "expected an attribute name after `.`, found %s", describe(s))
			}
			path = append(path, s.text)
		}
		if p.is(tIdent, "or") {
			p.fail(p.peek(), "a default (or): nixos-generate-config writes plain values")
		}
		return refNode{path, t.line}
	case tPunct:
		switch t.text {
		case "(":
			e := p.expr()
			p.expect(")")
			return e
		case "[":
			l := listNode{l: t.line}
			for !p.punct("]") {
				if p.peek().kind == tEOF {
					p.fail(p.peek(), "the list opened at line %d is not closed", t.line)
				}
				if !p.startsPrimary() {
					p.fail(p.peek(), "unexpected %s in a list", describe(p.peek()))
				}
				l.elems = append(l.elems, p.primary())
			}
			p.next()
			return l
		case "{":
			return attrsNode{p.bindings(t), t.line}
		}
	}
	p.fail(t, "unexpected %s", describe(t))
	return nil
}

// render shows a value in short Nix-like form for messages.
func render(n node) string {
	switch v := n.(type) {
	case strNode:
		return fmt.Sprintf("%q", v.s)
	case intNode:
		return v.s
	case pathNode:
		return v.p
	case refNode:
		return strings.Join(v.path, ".")
	case listNode:
		return "[ … ]"
	case attrsNode:
		return "{ … }"
	case appNode:
		return render(v.fn) + " …"
	case plusNode:
		var parts []string
		for _, t := range v.terms {
			parts = append(parts, render(t))
		}
		return "(" + strings.Join(parts, " + ") + ")"
	}
	return "?"
}
