package nix

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"
	"sync"
	"unicode/utf8"
)

// Activity and result types of Nix's --log-format internal-json
// (src/libutil/logging.hh).
const (
	actCopyPath = 100
	actBuilds   = 104
	actBuild    = 105

	resBuildLogLine = 101
	resProgress     = 105
)

// Progress is what Nix reported so far.
type Progress struct {
	BuildsDone, BuildsExpected int
	Building                   string // derivation being built, if any
	Copied                     int    // store paths whose copy finished
	// CopiedPaths are the last of them (at most maxRecentCopies), oldest
	// first.
	CopiedPaths []string
}

// Bounds of what a LogParser keeps (a remote Nix's stderr is untrusted):
// lines of at most maxLine bytes are read, each kept text is cut to
// maxKeptLine bytes, plain lines and errors are kept up to maxKept and
// maxKeptBytes each, the log tails of at most maxLogDrvs derivations up to
// maxKeptBytes together.
const (
	maxKept      = 200
	maxLine      = 1 << 20
	maxKeptLine  = 16 << 10
	maxKeptBytes = 512 << 10
	maxLogLines  = 10
	maxLogDrvs   = 64
	// maxActivities bounds the activities followed at once; maxNamed the
	// copies and builds among them (whose path is kept, at most
	// maxPathLen bytes: a store path is shorter).
	maxActivities   = 50000
	maxNamed        = 4096
	maxPathLen      = 1024
	maxRecentCopies = 16
)

// truncatedMark ends a kept text that was cut.
const truncatedMark = " … (truncated)"

// keep returns s cut to maxKeptLine bytes (marked), in memory of its own
// (a substring would hold on to the whole line).
func keep(s string) string {
	if len(s) <= maxKeptLine {
		return strings.Clone(s)
	}
	cut := maxKeptLine - len(truncatedMark)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strings.Clone(s[:cut]) + truncatedMark
}

// keepPath returns a path from an event, or "" when it is too long to be
// one.
func keepPath(s string) string {
	if len(s) > maxPathLen {
		return ""
	}
	return strings.Clone(s)
}

// LogParser consumes Nix's stderr in internal-json format (as an io.Writer),
// reports progress and keeps the error messages and build log tails.
type LogParser struct {
	// OnProgress is called after each event that changed the progress.
	OnProgress func(Progress)

	mu       sync.Mutex
	buf      []byte
	skipping bool // the rest of a line longer than maxLine is dropped
	progress Progress
	types    map[uint64]int    // activity id -> activity type
	copying  map[uint64]string // activity id -> path
	building map[uint64]string // activity id -> derivation
	logs     map[string][]string
	logOrder []string // derivations with a log tail, least recent first
	logBytes int
	errors   []*Error
	errBytes int
	plain    []string // lines that were not internal-json
	plainLen int
}

type logEvent struct {
	Action string          `json:"action"`
	ID     uint64          `json:"id"`
	Type   int             `json:"type"`
	Level  int             `json:"level"`
	Text   string          `json:"text"`
	Fields []any           `json:"fields"`
	Msg    string          `json:"msg"`
	RawMsg string          `json:"raw_msg"`
	File   json.RawMessage `json:"file"`
	Line   *int            `json:"line"`
	Column *int            `json:"column"`
}

var ansiRE = regexp.MustCompile(`\x1b\[[0-9;]*[A-Za-z]`)

// StripANSI removes terminal escape sequences.
func StripANSI(s string) string { return ansiRE.ReplaceAllString(s, "") }

// Write implements io.Writer.
func (p *LogParser) Write(b []byte) (int, error) {
	n := len(b)
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		chunk := b
		if i >= 0 {
			chunk = b[:i]
			b = b[i+1:]
		} else {
			b = nil
		}
		p.mu.Lock()
		var l []byte
		switch {
		case p.skipping:
		case len(p.buf)+len(chunk) > maxLine:
			// A line this long is no log line (a remote Nix's stderr
			// is untrusted): keep its start, drop the rest of it.
			l = append(p.buf, chunk[:maxLine-len(p.buf)]...)
			p.buf, p.skipping = nil, true
		case i >= 0:
			l = append(p.buf, chunk...)
			p.buf = nil
		default:
			p.buf = append(p.buf, chunk...)
		}
		if i >= 0 {
			if p.skipping && l == nil {
				p.buf = nil
			}
			p.skipping = false
		}
		p.mu.Unlock()
		if l != nil {
			p.line(l)
		}
	}
	return n, nil
}

func (p *LogParser) line(l []byte) {
	const prefix = "@nix "
	p.mu.Lock()
	if !bytes.HasPrefix(l, []byte(prefix)) {
		if s := strings.TrimSpace(StripANSI(string(l))); s != "" {
			s = keep(s)
			p.plain = append(p.plain, s)
			p.plainLen += len(s)
			for len(p.plain) > maxKept || p.plainLen > maxKeptBytes {
				p.plainLen -= len(p.plain[0])
				p.plain[0] = ""
				p.plain = p.plain[1:]
			}
		}
		p.mu.Unlock()
		return
	}
	var ev logEvent
	if err := json.Unmarshal(l[len(prefix):], &ev); err != nil {
		p.mu.Unlock()
		return
	}
	if p.copying == nil {
		p.types, p.copying, p.building, p.logs = map[uint64]int{}, map[uint64]string{}, map[uint64]string{}, map[string][]string{}
	}
	changed := false
	if ev.Action == "start" && (len(p.types) >= maxActivities || len(p.copying)+len(p.building) >= maxNamed) {
		ev.Action = "" // a flood of activities that never stop: ignore more
	}
	switch ev.Action {
	case "start":
		p.types[ev.ID] = ev.Type
		switch ev.Type {
		case actCopyPath:
			if len(ev.Fields) > 0 {
				if s, ok := ev.Fields[0].(string); ok && keepPath(s) != "" {
					p.copying[ev.ID] = keepPath(s)
				}
			}
		case actBuild:
			if len(ev.Fields) > 0 {
				if s, ok := ev.Fields[0].(string); ok && keepPath(s) != "" {
					s = keepPath(s)
					p.building[ev.ID] = s
					p.progress.Building = s
					changed = true
				}
			}
		}
	case "stop":
		delete(p.types, ev.ID)
		if path, ok := p.copying[ev.ID]; ok {
			delete(p.copying, ev.ID)
			p.progress.Copied++
			recent := p.progress.CopiedPaths
			if len(recent) >= maxRecentCopies {
				// A new slice: a Progress handed out keeps its own.
				recent = append(recent[1:len(recent):len(recent)], path)
			} else {
				recent = append(recent[:len(recent):len(recent)], path)
			}
			p.progress.CopiedPaths = recent
			changed = true
		}
		if _, ok := p.building[ev.ID]; ok {
			delete(p.building, ev.ID)
			p.progress.Building = ""
			changed = true
		}
	case "result":
		switch ev.Type {
		case resProgress:
			if len(ev.Fields) >= 2 {
				done, _ := ev.Fields[0].(float64)
				exp, _ := ev.Fields[1].(float64)
				// The "builds" activity counts derivations.
				if p.types[ev.ID] == actBuilds {
					p.progress.BuildsDone, p.progress.BuildsExpected = int(done), int(exp)
					changed = true
				}
			}
		case resBuildLogLine:
			if drv, ok := p.building[ev.ID]; ok && len(ev.Fields) > 0 {
				if s, ok := ev.Fields[0].(string); ok {
					p.logLine(drv, keep(StripANSI(s)))
				}
			}
		}
	case "msg":
		if ev.Level == 0 {
			e := &Error{Message: StripANSI(ev.RawMsg), Raw: StripANSI(ev.Msg)}
			if e.Message == "" { // no short form: all of the message, not its trace
				e.Message = ParseError(e.Raw, "").Message
			}
			var file string
			if len(ev.File) > 0 && json.Unmarshal(ev.File, &file) == nil && strings.HasPrefix(file, "/") && ev.Line != nil {
				e.File, e.Line = file, *ev.Line
				if ev.Column != nil {
					e.Column = *ev.Column
				}
				// Nix 2.26 and later put the position into the file field
				// too ("/…/configuration.nix:12:19"), beside line and column.
				if m := filePosRE.FindStringSubmatch(file); m != nil {
					e.File = m[1]
				}
			} else if parsed := ParseError(e.Raw, ""); parsed.File != "" {
				e.File, e.Line, e.Column = parsed.File, parsed.Line, parsed.Column
				if e.Message == "" {
					e.Message = parsed.Message
				}
			}
			e.Message = OneLine(strings.TrimPrefix(strings.TrimSpace(e.Message), "error: "))
			e.Drv = keepPath(drvRE.FindString(e.Raw + "\n" + e.Message))
			e.Message, e.Raw, e.File = keep(e.Message), keep(e.Raw), keepPath(e.File)
			p.errors = append(p.errors, e)
			p.errBytes += len(e.Message) + len(e.Raw)
			for len(p.errors) > maxKept || p.errBytes > maxKeptBytes {
				p.errBytes -= len(p.errors[0].Message) + len(p.errors[0].Raw)
				p.errors[0] = nil
				p.errors = p.errors[1:]
			}
		}
	}
	// CopiedPaths is never changed in place: the copy shares it.
	prog := p.progress
	cb := p.OnProgress
	p.mu.Unlock()
	if changed && cb != nil {
		cb(prog)
	}
}

// logLine adds a line to a derivation's log tail, within the bounds: the
// tails least recently written to are dropped first.
func (p *LogParser) logLine(drv, l string) {
	lines, ok := p.logs[drv]
	if ok {
		for i, d := range p.logOrder {
			if d == drv {
				p.logOrder = append(p.logOrder[:i], p.logOrder[i+1:]...)
				break
			}
		}
	}
	p.logOrder = append(p.logOrder, drv)
	if len(lines) >= maxLogLines {
		p.logBytes -= len(lines[0])
		lines = append(lines[:0:0], lines[1:]...)
	}
	p.logs[drv] = append(lines, l)
	p.logBytes += len(l)
	for len(p.logOrder) > 1 && (len(p.logOrder) > maxLogDrvs || p.logBytes > maxKeptBytes) {
		old := p.logOrder[0]
		for _, l := range p.logs[old] {
			p.logBytes -= len(l)
		}
		delete(p.logs, old)
		p.logOrder = p.logOrder[1:]
	}
}

var (
	// A position appended to a file name: "<file>:<line>:<column>".
	filePosRE       = regexp.MustCompile(`^(/.*?):\d+(?::\d+)?$`)
	drvRE           = regexp.MustCompile(`/nix/store/[0-9a-z]{32}-[^\s'"]+\.drv`)
	storePathLineRE = regexp.MustCompile(`^/nix/store/[0-9a-z]{32}-\S*$`)
)

// OneLine reduces a Nix message to one line for a one-line cause: Nix 2.34
// words a build failure as
//
//	Cannot build '/nix/store/…drv'.
//	Reason: builder failed with exit code 1.
//	Output paths:
//	  /nix/store/…
//
// where 2.8 to 2.26 said "builder for '/nix/store/…drv' failed with exit
// code 1". The lines are joined; a list of output paths is left out (the
// derivation names them), so the result still names the derivation and the
// exit code.
func OneLine(msg string) string {
	var parts []string
	skipping := false
	for _, l := range strings.Split(StripANSI(msg), "\n") {
		l = strings.TrimSpace(l)
		switch {
		case l == "":
			continue
		case strings.HasSuffix(l, "paths:") || strings.HasSuffix(l, "path:"):
			skipping = true
			continue
		case skipping && storePathLineRE.MatchString(l):
			continue
		}
		skipping = false
		parts = append(parts, l)
	}
	return strings.Join(parts, " ")
}

// Errors returns the error messages Nix printed, innermost last.
func (p *LogParser) Errors() []*Error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*Error(nil), p.errors...)
}

// BuildLog returns the last lines a derivation's builder printed.
func (p *LogParser) BuildLog(drv string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.logs[drv]...)
}

// Plain returns the lines that were not internal-json (e.g. from ssh).
func (p *LogParser) Plain() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.plain...)
}
