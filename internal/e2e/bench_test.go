package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/monibahmed/nixos-config/internal/testutil"
)

// The benchmark's smoke variant completes and reports every figure; its
// numbers are not judged here.
func TestBenchSmoke(t *testing.T) {
	requireLabPrereqs(t)
	requireNix(t)
	testutil.RequireTools(t, "nmap")
	dir := testutil.CopyRepo(t)
	out := t.TempDir()
	r := mage(t, dir, "bench", "-quick", "-out="+out)
	succeeds(t, r)
	for _, want := range []string{"fleet deploy", "no-op redeploy", "discovery /24", "Nix evaluators per deployAll"} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("bench output lacks %q:\n%s", want, r.Stdout)
		}
	}
	data, err := os.ReadFile(filepath.Join(out, "benchmarks.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Fleet []struct {
			N              int     `json:"n"`
			MageEvaluators int     `json:"mageEvaluators"`
			SSHPerTarget   float64 `json:"sshConnectionsPerTarget"`
			Mage           struct {
				Median float64 `json:"median"`
			} `json:"mageSeconds"`
			Baseline struct {
				Median float64 `json:"median"`
			} `json:"baselineSeconds"`
			Ceiling float64 `json:"labCeilingSeconds"`
			Bytes   int64   `json:"mageBytes"`
		} `json:"fleet"`
		NmapFound int `json:"nmapHosts"`
		MageFound int `json:"discoverHosts"`
		Goals     []struct {
			Name string `json:"name"`
		} `json:"goals"`
	}
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Fleet) != 2 || len(rep.Goals) < 5 {
		t.Fatalf("report: %s", data)
	}
	for _, f := range rep.Fleet {
		if f.Mage.Median <= 0 || f.Baseline.Median <= 0 || f.Ceiling <= 0 || f.Bytes < int64(f.N)*3<<20 || f.MageEvaluators != 1 || f.SSHPerTarget <= 0 {
			t.Errorf("figures for N=%d: %+v", f.N, f)
		}
	}
	if rep.MageFound != rep.NmapFound || rep.MageFound == 0 {
		t.Errorf("discovery found %d hosts, nmap %d", rep.MageFound, rep.NmapFound)
	}
	if _, err := os.Stat(filepath.Join(out, "benchmarks.md")); err != nil {
		t.Error(err)
	}
}
