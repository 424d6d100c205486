package target

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// History is the deployment ledger on each target: one JSON object per
// line, outside the Nix store, readable and writable by root only (the
// directory 0700, the file 0600). This package is its only writer; the
// activation unit appends lines this package rendered beforehand.
const (
	HistoryDir  = "/var/lib/nixos-config"
	HistoryFile = HistoryDir + "/history.jsonl"
)

// Kinds of history entries.
const (
	KindDeploy   = "deploy"
	KindRollback = "rollback"
)

// Results recorded in the history.
const (
	ResultActivating = "activating"  // the activation started; its outcome is not known yet
	ResultActivated  = "activated"   // switched, kept without verification (e.g. -norollback)
	ResultOK         = "ok"          // activated, verified and healthy
	ResultRolledBack = "rolled-back" // activated, then undone
	ResultFailed     = "failed"      // activation failed, nothing to roll back to
)

// Entry is one line of the history. Lines with the same ID are one event:
// later lines update earlier ones (e.g. the final result).
type Entry struct {
	ID         string `json:"id"`
	Kind       string `json:"kind,omitempty"`
	Generation int    `json:"generation,omitempty"`
	Path       string `json:"path,omitempty"`
	Commit     string `json:"commit,omitempty"`
	Dirty      bool   `json:"dirty,omitempty"`
	Deployer   string `json:"deployer,omitempty"`
	Time       string `json:"time,omitempty"`
	Mode       string `json:"mode,omitempty"`
	Result     string `json:"result,omitempty"`
	// SameSystemAs: this generation's system was recorded before under
	// another commit (the same system built from two commits or clones).
	SameSystemAs string `json:"sameSystemAs,omitempty"`
	// RolledBackTo: the generation the target returned to.
	RolledBackTo int    `json:"rolledBackTo,omitempty"`
	Note         string `json:"note,omitempty"`
}

// merge applies the non-empty fields of u to e.
func (e *Entry) merge(u Entry) {
	if u.Generation != 0 {
		e.Generation = u.Generation
	}
	for _, p := range []struct {
		dst *string
		src string
	}{
		{&e.Path, u.Path}, {&e.Commit, u.Commit}, {&e.Deployer, u.Deployer}, {&e.Time, u.Time},
		{&e.Mode, u.Mode}, {&e.Result, u.Result}, {&e.SameSystemAs, u.SameSystemAs}, {&e.Note, u.Note},
	} {
		if p.src != "" {
			*p.dst = p.src
		}
	}
	if u.Dirty {
		e.Dirty = true
	}
	if u.RolledBackTo != 0 {
		e.RolledBackTo = u.RolledBackTo
	}
}

// valid checks what an entry read from a target claims.
func (e *Entry) valid() bool {
	if e.ID == "" || len(e.ID) > 100 || e.Generation < 0 || e.Generation >= MaxGeneration || e.RolledBackTo < 0 || e.RolledBackTo >= MaxGeneration {
		return false
	}
	if e.Path != "" && !IsStorePath(e.Path) {
		return false
	}
	return true
}

// ParseHistory reads history lines, merging the lines of one event, in
// order of first appearance. Malformed and invalid lines are skipped. An
// update carries no kind; a second line with a kind and a known ID is a
// different event (a clash of IDs), kept apart instead of overwriting.
func ParseHistory(data string) []Entry {
	var out []Entry
	index := map[string]int{}
	for _, line := range strings.Split(data, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || len(line) > 16<<10 {
			continue
		}
		var e Entry
		if json.Unmarshal([]byte(line), &e) != nil || !e.valid() {
			continue
		}
		if i, ok := index[e.ID]; ok {
			if e.Kind == "" || e.Kind == out[i].Kind && e.Time == out[i].Time {
				out[i].merge(e)
				continue
			}
			e.ID = e.ID + "#" + strconv.Itoa(len(out))
		}
		index[e.ID] = len(out)
		out = append(out, e)
	}
	return out
}

// FormatHistory renders entries as history lines.
func FormatHistory(entries ...Entry) (string, error) {
	var b strings.Builder
	for _, e := range entries {
		line, err := json.Marshal(e)
		if err != nil {
			return "", err
		}
		b.Write(line)
		b.WriteByte('\n')
	}
	return b.String(), nil
}

// appendScript appends standard input to the history, root-only.
const appendScript = `umask 077
mkdir -p ` + HistoryDir + ` && chmod 700 ` + HistoryDir + ` || exit 1
cat >> ` + HistoryFile + ` && chmod 600 ` + HistoryFile

// AppendHistory adds entries to the target's history.
func (s *Session) AppendHistory(ctx context.Context, entries ...Entry) error {
	text, err := FormatHistory(entries...)
	if err != nil {
		return err
	}
	out, err := s.RunRoot(ctx, Root{Name: "writing the history", Args: []string{"sh", "-c", appendScript}, Stdin: strings.NewReader(text)})
	if err != nil {
		return commandError("writing the history", err, out)
	}
	return nil
}

// ReadHistory reads (the tail of) the target's history as root.
func (s *Session) ReadHistory(ctx context.Context) ([]Entry, error) {
	limit := s.Limits.History
	out, err := s.RunRoot(ctx, Root{Name: "reading the history", Limit: limit + 64<<10,
		Args: []string{"sh", "-c", `[ -e "$1" ] || exit 0; tail -c "$2" "$1"`, "read-history", HistoryFile, strconv.FormatInt(limit, 10)}})
	if err != nil {
		return nil, commandError("reading the history", err, out)
	}
	data := out.Stdout
	if int64(len(data)) >= limit {
		// The first line was cut: drop it.
		if i := strings.IndexByte(data, '\n'); i >= 0 {
			data = data[i+1:]
		}
	}
	return ParseHistory(data), nil
}

// LastDeploy returns the latest deploy entry for a generation (nil if none).
func LastDeploy(h []Entry, generation int) *Entry {
	for i := len(h) - 1; i >= 0; i-- {
		if h[i].Kind == KindDeploy && h[i].Generation == generation {
			return &h[i]
		}
	}
	return nil
}

// LatestDeploy returns the most recent deploy entry (nil if none).
func LatestDeploy(h []Entry) *Entry {
	var best *Entry
	for i := range h {
		if h[i].Kind != KindDeploy {
			continue
		}
		if best == nil || h[i].Time >= best.Time {
			best = &h[i]
		}
	}
	return best
}

// SameSystemAs finds an earlier record of path under another commit.
func SameSystemAs(h []Entry, path, commit string) string {
	for i := len(h) - 1; i >= 0; i-- {
		if h[i].Kind == KindDeploy && h[i].Path == path && h[i].Commit != "" && h[i].Commit != commit {
			return h[i].Commit
		}
	}
	return ""
}

// Now is the time format of the history.
func Now() string { return time.Now().UTC().Format(time.RFC3339) }

// NewID returns a unique event ID.
func NewID() string {
	return time.Now().UTC().Format("20060102T150405") + "-" + marker()[:8]
}

func itoa(n int) string { return fmt.Sprint(n) }
