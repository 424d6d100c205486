package nix

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"
	"sync"
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
	Building                   string   // derivation being built, if any
	CopiedPaths                []string // store paths whose copy finished
}

// Bounds of what a LogParser keeps: the last maxKept plain lines and
// errors, lines of at most maxLine bytes.
const (
	maxKept = 200
	maxLine = 1 << 20
	// maxActivities bounds the activities followed at once and the
	// derivations whose log tails are kept.
	maxActivities = 50000
)

// LogParser consumes Nix's stderr in internal-json format (as an io.Writer),
// reports progress and keeps the error messages and build log tails.
type LogParser struct {
	// OnProgress is called after each event that changed the progress.
	OnProgress func(Progress)

	mu       sync.Mutex
	buf      []byte
	progress Progress
	types    map[uint64]int    // activity id -> activity type
	copying  map[uint64]string // activity id -> path
	building map[uint64]string // activity id -> derivation
	logs     map[string][]string
	errors   []*Error
	plain    []string // lines that were not internal-json
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
	p.mu.Lock()
	p.buf = append(p.buf, b...)
	var lines [][]byte
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			break
		}
		lines = append(lines, append([]byte(nil), p.buf[:i]...))
		p.buf = p.buf[i+1:]
	}
	if len(p.buf) > maxLine {
		// A line this long is no log line (a remote Nix's stderr is
		// untrusted): keep its start, drop the rest of it.
		lines = append(lines, append([]byte(nil), p.buf[:maxLine]...))
		p.buf = p.buf[:0]
	}
	p.mu.Unlock()
	for _, l := range lines {
		p.line(l)
	}
	return len(b), nil
}

func (p *LogParser) line(l []byte) {
	const prefix = "@nix "
	p.mu.Lock()
	if !bytes.HasPrefix(l, []byte(prefix)) {
		if s := strings.TrimSpace(StripANSI(string(l))); s != "" {
			p.plain = append(p.plain, s)
			if len(p.plain) > maxKept {
				p.plain = p.plain[len(p.plain)-maxKept:]
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
	if ev.Action == "start" && (len(p.types) >= maxActivities || len(p.logs) >= maxActivities) {
		ev.Action = "" // a flood of activities that never stop: ignore more
	}
	switch ev.Action {
	case "start":
		p.types[ev.ID] = ev.Type
		switch ev.Type {
		case actCopyPath:
			if len(ev.Fields) > 0 {
				if s, ok := ev.Fields[0].(string); ok {
					p.copying[ev.ID] = s
				}
			}
		case actBuild:
			if len(ev.Fields) > 0 {
				if s, ok := ev.Fields[0].(string); ok {
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
			p.progress.CopiedPaths = append(p.progress.CopiedPaths, path)
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
					lines := append(p.logs[drv], StripANSI(s))
					if len(lines) > 10 {
						lines = lines[len(lines)-10:]
					}
					p.logs[drv] = lines
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
			e.Drv = drvRE.FindString(e.Raw + "\n" + e.Message)
			p.errors = append(p.errors, e)
			if len(p.errors) > maxKept {
				p.errors = p.errors[len(p.errors)-maxKept:]
			}
		}
	}
	prog := p.progress
	prog.CopiedPaths = append([]string(nil), p.progress.CopiedPaths...)
	cb := p.OnProgress
	p.mu.Unlock()
	if changed && cb != nil {
		cb(prog)
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
