package inventory

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestValidateName(t *testing.T) {
	good := []string{"lab-server", "a", "media-center2", "x" + strings.Repeat("y", 62)}
	bad := []string{"", "Lab", "lab;rm", "1lab", "-lab", "lab_server", "lab server", "x" + strings.Repeat("y", 63), "../etc"}
	for _, n := range good {
		if err := ValidateName(n); err != nil {
			t.Errorf("%q rejected: %v", n, err)
		}
	}
	for _, n := range bad {
		if err := ValidateName(n); err == nil {
			t.Errorf("%q accepted", n)
		}
	}
}

func TestValidateAddress(t *testing.T) {
	good := []string{"192.168.1.50", "::1", "fe80::1", "lab-server.local", "localhost", "media.example.org."}
	bad := []string{"", "192.168.1.300", "1.2.3", "host;id", "a b", "-bad.example", "$(id)"}
	for _, a := range good {
		if err := ValidateAddress(a); err != nil {
			t.Errorf("%q rejected: %v", a, err)
		}
	}
	for _, a := range bad {
		if err := ValidateAddress(a); err == nil {
			t.Errorf("%q accepted", a)
		}
	}
}

func writeTarget(t *testing.T, root, name, facts string) {
	t.Helper()
	d := filepath.Join(root, "targets", name)
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if facts != "" {
		if err := os.WriteFile(filepath.Join(d, FactsFile), []byte(facts), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestLoadRepoDefaultsAndCommonSkipped(t *testing.T) {
	root := t.TempDir()
	writeTarget(t, root, "common", "")
	writeTarget(t, root, "zeta", `{"address": "10.0.0.2", "tags": ["b"]}`)
	writeTarget(t, root, "alpha", `{"address": "10.0.0.1", "user": "ops", "system": "aarch64-linux"}`)
	inv, err := LoadRepo(root)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(inv.Names(), ","); got != "alpha,zeta" {
		t.Fatalf("names = %s", got)
	}
	z, _ := inv.Get("zeta")
	if z.User != DefaultUser || z.System != DefaultSystem || z.Tags[0] != "b" {
		t.Fatalf("defaults not applied: %+v", z)
	}
	a, _ := inv.Get("alpha")
	if a.User != "ops" || a.System != "aarch64-linux" {
		t.Fatalf("explicit facts lost: %+v", a)
	}
	if probs := inv.Lint(); len(probs) != 0 {
		t.Fatalf("unexpected problems: %v", probs)
	}
}

func TestLoadRepoRejectsUnknownField(t *testing.T) {
	root := t.TempDir()
	writeTarget(t, root, "alpha", `{"address": "10.0.0.1", "adress": "typo"}`)
	_, err := LoadRepo(root)
	if err == nil || !strings.Contains(err.Error(), `unknown field "adress"`) || !strings.Contains(err.Error(), "targets/alpha/target.json") {
		t.Fatalf("want unknown-field error naming the file, got %v", err)
	}
}

func TestLintFindsProblems(t *testing.T) {
	inv := &Inventory{Targets: []Target{
		{Name: "lab;rm", Facts: Facts{Address: "10.0.0.1", User: "monibahmed", System: "x86_64-linux"}},
		{Name: "one", Facts: Facts{Address: "10.0.0.5", User: "monibahmed", System: "x86_64-linux"}},
		{Name: "two", Facts: Facts{Address: "10.0.0.5", User: "monibahmed", System: "x86_64-linux"}},
		{Name: "three", Facts: Facts{Address: "999.1.1.1", User: "monibahmed", System: "x86_64-linux",
			Health: []HealthCheck{{Type: "tcp"}, {Type: "http", URL: "ftp://x"}, {Type: "ping"}, {Type: "tcp", Port: 22, Timeout: "-5s"}}}},
	}}
	var lines []string
	for _, p := range inv.Lint() {
		lines = append(lines, p.String())
	}
	all := strings.Join(lines, "\n")
	for _, want := range []string{
		`lab;rm: invalid target name "lab;rm"`,
		"two: duplicate address 10.0.0.5 (also used by one)",
		`three: invalid address "999.1.1.1"`,
		"three: health check 1: type \"tcp\" needs \"port\"",
		"three: health check 2: type \"http\" needs \"url\"",
		"three: health check 3: unknown type \"ping\"",
		`three: health check 4: timeout "-5s": must be between 1ns and 1h`,
	} {
		if !strings.Contains(all, want) {
			t.Errorf("missing %q in:\n%s", want, all)
		}
	}
}

func TestInventoryFileRoundTripAndDuplicates(t *testing.T) {
	inv := &Inventory{Targets: []Target{{Name: "b", Facts: Facts{Address: "10.1.1.2", User: "u", System: "x86_64-linux", Tags: []string{"lab"}}},
		{Name: "a", Facts: Facts{Address: "10.1.1.1", User: "monibahmed", System: "x86_64-linux"}}}}
	data, err := inv.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse(data, "mem")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(back.Names(), ",") != "a,b" || back.Targets[1].Tags[0] != "lab" {
		t.Fatalf("round trip lost data: %+v", back.Targets)
	}
	_, err = Parse([]byte(`{"a": {"address": "1.1.1.1"}, "a": {"address": "1.1.1.2"}}`), "dup.json")
	if err == nil || !strings.Contains(err.Error(), "target a is listed twice") {
		t.Fatalf("duplicate name not caught: %v", err)
	}
}

func TestGetUnknownListsValid(t *testing.T) {
	inv := &Inventory{Source: "x", Targets: []Target{{Name: "lab-server"}, {Name: "media-center"}}}
	_, err := inv.Get("lab-sever")
	if err == nil || !strings.Contains(err.Error(), "lab-server, media-center") {
		t.Fatalf("got %v", err)
	}
	_, err = inv.Get("lab;rm")
	if err == nil || !strings.Contains(err.Error(), "invalid target name") {
		t.Fatalf("got %v", err)
	}
}

func TestBuildValuesAndLint(t *testing.T) {
	for _, ok := range []string{"", "local", "target", "pi-builder"} {
		if err := ValidateBuild(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"Local", "remote host", "ssh://x", "a;b"} {
		if err := ValidateBuild(bad); err == nil || !strings.Contains(err.Error(), `use "local"`) {
			t.Errorf("%q accepted or unclear: %v", bad, err)
		}
	}
	f := func(system, build string) Facts {
		return Facts{Address: "10.0.0.1", User: "monibahmed", System: system, Build: build}
	}
	inv := &Inventory{Targets: []Target{
		{Name: "pi", Facts: f("aarch64-linux", "builder")},
		{Name: "builder", Facts: f("aarch64-linux", "")},
		{Name: "laptop", Facts: f("x86_64-linux", "builder")},
		{Name: "ghost", Facts: f("x86_64-linux", "nowhere")},
		{Name: "weird", Facts: f("x86_64-linux", "over there")},
		{Name: "self", Facts: f("x86_64-linux", "self")},
		{Name: "board", Facts: f("aarch64-linux", "target")},
	}}
	for i := range inv.Targets {
		inv.Targets[i].Address = "10.0.0." + string(rune('1'+i))
	}
	var lines []string
	for _, p := range inv.Lint() {
		lines = append(lines, p.String())
	}
	all := strings.Join(lines, "\n")
	for _, want := range []string{
		`laptop: build host builder is aarch64-linux but this target is x86_64-linux`,
		`ghost: build host "nowhere" is not a target of the inventory (targets: pi, builder, laptop, ghost, weird, self, board)`,
		`weird: invalid build "over there"`,
	} {
		if !strings.Contains(all, want) {
			t.Errorf("missing %q in:\n%s", want, all)
		}
	}
	if len(lines) != 3 {
		t.Errorf("want 3 problems (pi, self and board are fine), got:\n%s", all)
	}
	if BuildOf(inv.Targets[5]) != BuildTarget || BuildOf(inv.Targets[1]) != BuildLocal || BuildOf(inv.Targets[0]) != "builder" {
		t.Errorf("BuildOf: %s %s %s", BuildOf(inv.Targets[5]), BuildOf(inv.Targets[1]), BuildOf(inv.Targets[0]))
	}
	// target.json takes the field.
	facts, err := ParseFacts([]byte(`{"address": "10.0.0.9", "system": "aarch64-linux", "build": "target"}`))
	if err != nil || facts.Build != "target" {
		t.Fatalf("parse: %+v %v", facts, err)
	}
}
