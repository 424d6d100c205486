package deploy

import (
	"context"
	"encoding/json"
	"sort"
	"strings"
	"time"
)

// HistoryFile is the deployment history on each target: one JSON object per
// line, root-owned, outside the Nix store, readable by the deploy user.
const HistoryFile = "/var/lib/nixos-config/history.jsonl"

// Kinds of history entries.
const (
	KindDeploy   = "deploy"
	KindRollback = "rollback"
)

// Results recorded in the history.
const (
	ResultActivated  = "activated"   // switched, outcome not yet known
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
	if u.Kind != "" {
		e.Kind = u.Kind
	}
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

// ParseHistory reads history lines, merging lines of one event, in order of
// first appearance. Malformed lines are skipped.
func ParseHistory(data string) []Entry {
	var out []Entry
	index := map[string]int{}
	for _, line := range strings.Split(data, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		var e Entry
		if json.Unmarshal([]byte(line), &e) != nil {
			continue
		}
		if i, ok := index[e.ID]; ok && e.ID != "" {
			out[i].merge(e)
			continue
		}
		index[e.ID] = len(out)
		out = append(out, e)
	}
	return out
}

// readHistory fetches a target's history (no sudo needed).
func readHistory(ctx context.Context, sh Shell) ([]Entry, error) {
	out, err := sh.Run(ctx, "cat "+HistoryFile+" 2>/dev/null || true", nil)
	if err != nil {
		return nil, err
	}
	return ParseHistory(out.Stdout), nil
}

// appendHistory adds lines to the target's history as root.
func appendHistory(ctx context.Context, s *session, entries ...Entry) error {
	var b strings.Builder
	for _, e := range entries {
		line, err := json.Marshal(e)
		if err != nil {
			return err
		}
		b.Write(line)
		b.WriteByte('\n')
	}
	script := `umask 022; mkdir -p /var/lib/nixos-config && cat >> ` + HistoryFile
	_, err := s.sudoInput(ctx, b.String(), "sh", "-c", script)
	return err
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

// sameSystemAs finds an earlier record of path under another commit.
func sameSystemAs(h []Entry, path, commit string) string {
	for i := len(h) - 1; i >= 0; i-- {
		if h[i].Kind == KindDeploy && h[i].Path == path && h[i].Commit != "" && h[i].Commit != commit {
			return h[i].Commit
		}
	}
	return ""
}

func now() string { return time.Now().UTC().Format(time.RFC3339) }

// sortByGeneration orders entries by generation, then time.
func sortByGeneration(h []Entry) {
	sort.SliceStable(h, func(i, j int) bool {
		if h[i].Generation != h[j].Generation {
			return h[i].Generation < h[j].Generation
		}
		return h[i].Time < h[j].Time
	})
}
