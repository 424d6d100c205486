package ui

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestPlainLinesAreTimestampedWithoutEscapes(t *testing.T) {
	var b bytes.Buffer
	p := New(&b) // a buffer is not a terminal
	p.Now = func() time.Time { return time.Date(2026, 11, 26, 1, 2, 3, 0, time.UTC) }
	p.Linef("%s %s", p.OK("ok"), p.Bad("failed"))
	if got := b.String(); got != "2026-11-26T01:02:03Z ok failed\n" {
		t.Fatalf("got %q", got)
	}
}

func TestColorOnlyWhenAllowed(t *testing.T) {
	p := &Printer{Color: true}
	if !strings.Contains(p.Bad("x"), "\x1b[31m") {
		t.Fatal("expected colour")
	}
	p.Color = false
	if p.Bad("x") != "x" {
		t.Fatal("expected no colour")
	}
}

func TestTable(t *testing.T) {
	var b bytes.Buffer
	if err := Table(&b, []string{"NAME", "ADDRESS"}, [][]string{{"lab-server", "192.168.1.50"}, {"x", "y"}}); err != nil {
		t.Fatal(err)
	}
	want := "NAME        ADDRESS\nlab-server  192.168.1.50\nx           y\n"
	if b.String() != want {
		t.Fatalf("got %q", b.String())
	}
}
