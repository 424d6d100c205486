package bench

import (
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestStat(t *testing.T) {
	s := stat([]float64{3, 1, 2})
	if s.Median != 2 || s.Min != 1 || s.Max != 3 {
		t.Fatalf("%+v", s)
	}
	if s := stat([]float64{4, 1, 2, 3}); s.Median != 2.5 {
		t.Fatalf("even median %+v", s)
	}
}

func TestLowerBound(t *testing.T) {
	p := Profile{TargetMbit: 100, UplinkMbit: 1000, SharedMiB: 40, UniqueMiB: 20}
	// 60 MiB through a 100 Mbit/s link.
	want := 60.0 * (1 << 20) * 8 / 100e6
	if got := lowerBound(1, p); math.Abs(got-want) > 1e-9 {
		t.Fatalf("N=1: %v, want %v", got, want)
	}
	// 20 targets: 1.2 GiB through the 1 Gbit/s uplink dominates.
	if got, up := lowerBound(20, p), 20*60.0*(1<<20)*8/1000e6; math.Abs(got-up) > 1e-9 {
		t.Fatalf("N=20: %v, want %v", got, up)
	}
}

func TestEvaluatorsFromShimLog(t *testing.T) {
	log := filepath.Join(t.TempDir(), "log")
	lines := []string{
		"--version",
		"--extra-experimental-features nix-command flakes build --no-link --json /r#a /r#b",
		"--extra-experimental-features nix-command flakes path-info --json -r /nix/store/x",
		"--extra-experimental-features nix-command copy --to ssh-ng://u@h /nix/store/x",
		"--extra-experimental-features nix-command flakes eval --json /r#nixosConfigurations",
	}
	os.WriteFile(log, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
	if n, total := evaluators(log, 0); n != 2 || total != 5 {
		t.Fatalf("evaluators %d of %d", n, total)
	}
	if n, _ := evaluators(log, 2); n != 1 {
		t.Fatalf("from line 2: %d", n)
	}
}

func TestGoals(t *testing.T) {
	r := &Report{
		Fleet: []FleetResult{
			{N: 1, Mage: Stat{Median: 5.5}, Baseline: Stat{Median: 6}, Ceiling: 5.4, MageEvaluators: 1, SSHPerTarget: 2},
			{N: 8, Mage: Stat{Median: 8}, Baseline: Stat{Median: 48}, Ceiling: 7.8, MageEvaluators: 1, SSHPerTarget: 2},
		},
		NoopMage: Stat{Median: 1.2}, NoopRaw: Stat{Median: 1},
		Discover: Stat{Median: 1}, Nmap: Stat{Median: 2},
	}
	got := map[string]bool{}
	for _, g := range r.Goals() {
		got[g.Name] = g.Met
	}
	for name, met := range map[string]bool{
		"deployAll / sequential at N=1": true, "deployAll / lab ceiling at N=1": true, "deployAll / lab ceiling at N=8": true,
		"no-op redeploy / bare commands": true, "Nix evaluators per deployAll": true, "SSH connections per target per deploy": true,
		"discover:subnet / nmap -p22 --open": true,
	} {
		if got[name] != met {
			t.Errorf("%s: met=%v", name, got[name])
		}
	}
	r.Fleet[0].Mage.Median = 5.8 // 5.8/6 > 0.95 and 5.8/5.4 > 1.05
	r.Fleet[1].SSHPerTarget = 3
	for _, g := range r.Goals() {
		switch g.Name {
		case "deployAll / sequential at N=1", "deployAll / lab ceiling at N=1", "SSH connections per target per deploy":
			if g.Met {
				t.Errorf("%s should be missed", g.Name)
			}
		}
	}
}

func TestLoadBusy(t *testing.T) {
	if (Load{ForeignCPU: 0.5, Seconds: 10}).Busy() {
		t.Error("0.05 cores of others is quiet")
	}
	if !(Load{ForeignCPU: 3, Seconds: 10}).Busy() {
		t.Error("0.3 cores of others is load")
	}
	if w := worst(Load{ForeignCPU: 1, Seconds: 10}, Load{ForeignCPU: 1, Seconds: 2}); w.Seconds != 2 {
		t.Errorf("worst: %+v", w)
	}
	// Measuring a busy child of ours counts nothing as foreign.
	l, err := measure(func() error {
		return exec.Command("sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done").Run()
	})
	if err != nil || l.Seconds <= 0 {
		t.Fatalf("%+v %v", l, err)
	}
}

// A goal the link itself forbids is explained from the figures.
func TestAnalysisNamesTheLinkLimit(t *testing.T) {
	r := &Report{Fleet: []FleetResult{{N: 1, Mage: Stat{Median: 5.65}, Baseline: Stat{Median: 5.77}, Ceiling: 5.50, Eval: 0.05, LowerBound: 5.03}}}
	if a := r.analysis(); !strings.Contains(a, "the link is the limit") || !strings.Contains(a, "5.48 s") {
		t.Errorf("analysis:\n%s", a)
	}
	// The copy alone fits, but not after the evaluation that precedes it.
	r.Fleet[0].Ceiling = 5.45
	if a := r.analysis(); !strings.Contains(a, "the link is the limit") || !strings.Contains(a, "together 5.50 s") {
		t.Errorf("analysis:\n%s", a)
	}
	r.Fleet[0].Ceiling = 5.0
	if a := r.analysis(); strings.Contains(a, "the link is the limit") {
		t.Errorf("a reachable goal blamed on the link:\n%s", a)
	}
}
