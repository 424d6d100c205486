package deploy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/monibahmed/nixos-config/internal/inventory"
	"github.com/monibahmed/nixos-config/internal/nix"
	"github.com/monibahmed/nixos-config/internal/target/targettest"
	"github.com/monibahmed/nixos-config/internal/trouble"
)

func TestPlan(t *testing.T) {
	fleet := &inventory.Inventory{Targets: []inventory.Target{
		{Name: "pi", Facts: inventory.Facts{Address: "10.0.0.2", User: "u", System: "aarch64-linux", Build: "builder"}},
		{Name: "builder", Facts: inventory.Facts{Address: "10.0.0.3", User: "u", System: "aarch64-linux"}},
		{Name: "board", Facts: inventory.Facts{Address: "10.0.0.4", User: "u", System: "aarch64-linux", Build: "board"}},
		{Name: "here", Facts: inventory.Facts{Address: "localhost", User: "u", System: "x86_64-linux", Build: "target"}},
		{Name: "ghost", Facts: inventory.Facts{Address: "10.0.0.5", User: "u", Build: "nowhere"}},
		{Name: "bad", Facts: inventory.Facts{Address: "10.0.0.6", User: "u", Build: "two words"}},
	}}
	d := &Deployer{Fleet: fleet}
	got := func(names []string, o Options) (string, error) {
		var ts []inventory.Target
		for _, n := range names {
			tg, _ := fleet.Get(n)
			ts = append(ts, tg)
		}
		p, err := d.plan(ts, o)
		var out []string
		for _, n := range names {
			out = append(out, n+"="+p[n].String())
		}
		return strings.Join(out, " "), err
	}
	if s, err := got([]string{"pi", "builder", "board", "here"}, Options{}); err != nil || s != "pi=builder builder=local board=target here=local" {
		t.Errorf("%s %v", s, err)
	}
	if s, err := got([]string{"pi", "builder"}, Options{BuildOn: "target"}); err != nil || s != "pi=target builder=target" {
		t.Errorf("-buildon=target: %s %v", s, err)
	}
	if s, err := got([]string{"pi", "builder"}, Options{BuildOn: "builder"}); err != nil || s != "pi=builder builder=target" {
		t.Errorf("-buildon=builder: %s %v", s, err)
	}
	if _, err := got([]string{"pi"}, Options{BuildOn: "nowhere"}); err == nil || !strings.Contains(err.Error(), `-buildon: build host "nowhere" is not a target of the inventory`) {
		t.Errorf("unknown -buildon: %v", err)
	}
	if _, err := got([]string{"ghost"}, Options{}); err == nil || !strings.Contains(err.Error(), `target ghost: "build": build host "nowhere" is not a target`) {
		t.Errorf("unknown build host: %v", err)
	}
	if _, err := got([]string{"bad"}, Options{}); err == nil || !strings.Contains(err.Error(), `invalid build "two words"`) || !strings.Contains(err.Error(), "mage check") {
		t.Errorf("bad build: %v", err)
	}
	// -user and -port reach the build host too.
	tg, _ := fleet.Get("pi")
	p, err := d.plan([]inventory.Target{tg}, Options{User: "ops", Port: 2222})
	if err != nil || p["pi"].host.User != "ops" || p["pi"].host.Port != 2222 || !p["pi"].host.UserSet {
		t.Errorf("%+v %v", p["pi"].host, err)
	}
	if _, err := d.plan([]inventory.Target{tg}, Options{Trust: TrustSigned}); err == nil || !strings.Contains(err.Error(), "-trust=signed signs only what is built on this machine") {
		t.Errorf("signed closures from a build host: %v", err)
	}
	if err := (&Options{BuildOn: "over there"}).Normalize(); err == nil || !strings.Contains(err.Error(), "-buildon") {
		t.Errorf("Normalize: %v", err)
	}
}

// evalNix evaluates every system to an aarch64 derivation (or x86_64 for
// names in x86) and builds nothing it is not asked to.
type evalNix struct {
	fakeNix
	x86      map[string]bool
	evals    int
	realised []string
}

func (n *evalNix) Derivations(_ context.Context, _ nix.Flake, names []string, _ *nix.LogParser) (map[string]nix.Derivation, error) {
	n.evals++
	m := map[string]nix.Derivation{}
	for i, name := range names {
		sys := "aarch64-linux"
		if n.x86[name] {
			sys = "x86_64-linux"
		}
		m[name] = nix.Derivation{Drv: fmt.Sprintf("/nix/store/%032d-nixos-system-%s.drv", i, name), Out: fmt.Sprintf("/nix/store/%032d-nixos-system-%s", i, name), System: sys}
	}
	return m, nil
}

func (n *evalNix) Realise(_ context.Context, _ nix.Flake, drvs []string, _ *nix.LogParser) ([]string, error) {
	n.realised = append(n.realised, drvs...)
	return nil, nil
}

func (n *evalNix) Build(context.Context, nix.Flake, []string, *nix.LogParser) ([]string, error) {
	return nil, errors.New("nix build must not run")
}

// A system this machine cannot build, built here: failed before anything
// is copied, with the setting to change; a cross-compiled one (declared
// aarch64, derivation x86_64) builds here.
func TestForeignSystemFailsBeforeCopy(t *testing.T) {
	ft := &targettest.Target{Hostname: "pi", User: "monibahmed", FreeKB: 1 << 30}
	n := &evalNix{x86: map[string]bool{"cross": true}}
	d := &Deployer{Root: "/repo", Nix: n, Git: fakeGit{}, Connector: &fakeConnector{t: ft}, Report: quiet{}, Sudo: &Sudo{}}
	pi := inventory.Target{Name: "pi", Facts: inventory.Facts{Address: "10.0.0.1", User: "monibahmed", System: "aarch64-linux"}}
	res, err := d.Run(context.Background(), []inventory.Target{pi}, Options{Offline: true})
	if err != nil {
		t.Fatal(err)
	}
	var f *Failure
	if !errors.As(res[0].Err, &f) || f.Section != trouble.Foreign || f.Stage != StageBuild ||
		!strings.Contains(f.Error(), "this machine builds x86_64-linux systems, not aarch64-linux") || !strings.Contains(f.Error(), `"build": "target"`) || !strings.Contains(f.Error(), "-buildon=target") {
		t.Fatalf("%v", res[0].Err)
	}
	if n.copies != 0 || len(n.realised) != 0 || ft.Generation != 0 || n.evals != 1 {
		t.Fatalf("copies %d, realised %v, generation %d, evaluations %d", n.copies, n.realised, ft.Generation, n.evals)
	}
	ft2 := &targettest.Target{Hostname: "cross", User: "monibahmed", FreeKB: 1 << 30}
	n2 := &evalNix{x86: map[string]bool{"cross": true}}
	d2 := &Deployer{Root: "/repo", Nix: n2, Git: fakeGit{}, Connector: &fakeConnector{t: ft2}, Report: quiet{}, Sudo: &Sudo{}}
	cross := inventory.Target{Name: "cross", Facts: inventory.Facts{Address: "10.0.0.1", User: "monibahmed", System: "aarch64-linux"}}
	res, err = d2.Run(context.Background(), []inventory.Target{cross}, Options{Offline: true, ConfirmTimeout: 30e9})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Status != StatusOK || len(n2.realised) != 1 || n2.copies != 1 || res[0].BuiltOn != "local" {
		t.Fatalf("cross-compiled: %v %v realised %v copies %d", res[0].Status, res[0].Err, n2.realised, n2.copies)
	}
}
