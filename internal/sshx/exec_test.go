package sshx

import (
	"strings"
	"testing"
)

// What a remote command prints on failure reaches messages: its escapes
// are made visible and its length is bounded.
func TestExitErrorSanitized(t *testing.T) {
	e := &ExitError{Command: "x", Output: Output{Code: 3, Stderr: strings.Repeat("noise\n", 100000) + "\x1b]0;pwned\x07\x1b[2Jbad\rline\n"}}
	msg := e.Error()
	for _, c := range []byte{0x1b, 0x07, '\r', '\n'} {
		if strings.IndexByte(msg, c) >= 0 {
			t.Fatalf("raw control byte 0x%02x in %q", c, msg[:min(len(msg), 200)])
		}
	}
	if msg != `remote command exited with status 3: noise | noise | \x1b]0;pwned\a\x1b[2Jbad\rline` {
		t.Errorf("message: %q", msg[:min(len(msg), 200)])
	}
	e.Stderr = strings.Repeat("y", 1<<20)
	if msg := e.Error(); len(msg) > 400 {
		t.Errorf("message of %d bytes", len(msg))
	}
}
