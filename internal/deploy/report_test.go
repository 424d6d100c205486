package deploy

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/monibahmed/nixos-config/internal/ui"
)

// A note about the shared build prints as "build" but is no target's row:
// a target may be called "build".
func TestSharedBuildNoteIsNoTargetsRow(t *testing.T) {
	var plain bytes.Buffer
	pr := &PlainReporter{P: ui.New(&plain)}
	pr.Note(SharedBuild, "2 evaluated here")
	pr.Note("build", "preflight")
	if got := plain.String(); !strings.Contains(got, " build: 2 evaluated here\n") || !strings.Contains(got, " build: preflight\n") || strings.Contains(got, "\x00") {
		t.Fatalf("plain output: %q", got)
	}

	var screen bytes.Buffer
	b := ui.NewBoard(&screen, false)
	br := NewBoardReporter(b, ui.New(&bytes.Buffer{}), []string{"build"})
	br.Note("build", "target note")
	br.Note(SharedBuild, "shared note")
	b.Stop()
	// The last frame: after the last cursor-up.
	frames := regexp.MustCompile(`\x1b\[\d+A`).Split(screen.String(), -1)
	last := frames[len(frames)-1]
	if !strings.Contains(last, "target note") || !strings.Contains(last, "shared note") || strings.Contains(last, "\x00") {
		t.Fatalf("the board lost a row or printed the key: %q", last)
	}
}

// A hook's note about a finished target keeps the target's result on its
// row of the board.
func TestBoardNoteAfterFinishedKeepsResult(t *testing.T) {
	var screen bytes.Buffer
	b := ui.NewBoard(&screen, false)
	br := NewBoardReporter(b, ui.New(&bytes.Buffer{}), []string{"lab-server"})
	br.Stage("lab-server", StageActivate)
	br.Finished(Result{Target: "lab-server", Status: StatusOK, Duration: 5200 * time.Millisecond})
	br.Note("lab-server", "hook: notified")
	b.Stop()
	frames := regexp.MustCompile(`\x1b\[\d+A`).Split(screen.String(), -1)
	last := frames[len(frames)-1]
	if !regexp.MustCompile(`lab-server\s+ok 5.2s\s+hook: notified`).MatchString(last) {
		t.Fatalf("the hook's note replaced the target's result: %q", last)
	}
}
