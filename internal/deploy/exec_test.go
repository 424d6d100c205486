package deploy

import (
	"strings"
	"sync"
	"testing"
)

// What a target prints is untrusted: lines are sanitized, cut, and the
// stream is bounded.
func TestExecLineWriter(t *testing.T) {
	var mu sync.Mutex
	var got []string
	w := &lineWriter{target: "t", stream: "stdout", emit: func(target, stream, line string) {
		mu.Lock()
		got = append(got, target+" "+stream+" "+line)
		mu.Unlock()
	}}
	w.Write([]byte("plain\r\nti"))
	w.Write([]byte("tle \x1b]0;pwned\x07\x1b[2Jx\rlab-server\n"))
	w.Write([]byte(strings.Repeat("y", 5000)))
	w.Write([]byte("\nlast"))
	w.flush()
	if got[0] != "t stdout plain" || got[1] != `t stdout title \x1b]0;pwned\a\x1b[2Jx\rlab-server` {
		t.Fatalf("%q", got[:2])
	}
	if len(got[2]) > 4200 || !strings.Contains(got[2], "…(+") {
		t.Fatalf("long line not cut: %d", len(got[2]))
	}
	if got[len(got)-1] != "t stdout last" || !strings.Contains(w.text(), "plain\n") || w.truncated {
		t.Fatalf("%q %v", got[len(got)-1], w.truncated)
	}
	// More than MaxExecOutput: the rest is dropped, once noted.
	big := &lineWriter{target: "t", stream: "stdout"}
	chunk := []byte(strings.Repeat("z", 1000) + "\n")
	for i := 0; i < 3000; i++ {
		if n, err := big.Write(chunk); n != len(chunk) || err != nil {
			t.Fatal(n, err)
		}
	}
	big.flush()
	if !big.truncated || len(big.text()) > MaxExecOutput+8192 || strings.Count(big.text(), "the rest is not shown") != 1 {
		t.Fatalf("truncated %v, kept %d bytes", big.truncated, len(big.text()))
	}
}
