package target

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/monibahmed/nixos-config/internal/sshx"
)

// An interrupt is told by the context's cancellation, not by text: a
// command whose error merely starts with "interrupted" is not one.
func TestCommandErrorInterrupted(t *testing.T) {
	e := commandError("reading the state", fmt.Errorf("interrupted: %w", context.Canceled), sshx.Output{})
	if e.Cause != "reading the state: interrupted" {
		t.Errorf("cancelled: %q", e.Cause)
	}
	e = commandError("reading the state", errors.New("interrupted system call"), sshx.Output{})
	if e.Cause == "reading the state: interrupted" || e.Remedy == "" {
		t.Errorf("not an interrupt, explained as one: %q: %q", e.Cause, e.Remedy)
	}
}
