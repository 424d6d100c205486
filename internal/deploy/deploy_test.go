package deploy

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/monibahmed/nixos-config/internal/inventory"
	"github.com/monibahmed/nixos-config/internal/nix"
)

func fleet() *inventory.Inventory {
	return &inventory.Inventory{Targets: []inventory.Target{
		{Name: "dev-workstation", Facts: inventory.Facts{Tags: []string{"workstation"}}},
		{Name: "lab-server", Facts: inventory.Facts{Tags: []string{"lab", "server"}}},
		{Name: "media-center", Facts: inventory.Facts{Tags: []string{"media"}}},
	}}
}

func names(ts []inventory.Target) string {
	var n []string
	for _, t := range ts {
		n = append(n, t.Name)
	}
	return strings.Join(n, ",")
}

func TestSelect(t *testing.T) {
	cases := map[string]string{
		"":                       "dev-workstation,lab-server,media-center",
		"lab-server":             "lab-server",
		"*-center,@workstation":  "dev-workstation,media-center",
		"@server, lab-server":    "lab-server",
		"media-center,dev-work*": "dev-workstation,media-center",
	}
	for sel, want := range cases {
		got, err := Select(fleet(), sel)
		if err != nil || names(got) != want {
			t.Errorf("Select(%q) = %s, %v; want %s", sel, names(got), err, want)
		}
	}
	for _, bad := range []string{"nope", "@nosuchtag", "[", "lab-server,nope"} {
		if _, err := Select(fleet(), bad); err == nil {
			t.Errorf("Select(%q) accepted", bad)
		}
	}
}

func TestOptionsNormalize(t *testing.T) {
	o := Options{}
	// No connect timeout or dead-peer time unless a flag gives one: the
	// connection's resolution applies ssh_config, then the defaults.
	if err := o.Normalize(); err != nil || o.Mode != ModeSwitch || o.Jobs != DefaultJobs || o.ConnectTimeout != 0 || o.DeadPeer != 0 || o.CommandTimeout == 0 {
		t.Fatalf("defaults: %+v %v", o, err)
	}
	for _, bad := range []Options{{Mode: "reboot"}, {Jobs: -1}, {User: "root;id"}} {
		if err := bad.Normalize(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	for _, c := range []struct {
		o    Options
		want string
	}{
		{Options{ConnectTimeout: 500 * time.Millisecond}, "invalid -timeout=500ms: at least 1s"},
		{Options{DeadPeer: 500 * time.Millisecond}, "invalid -deadpeer=500ms: at least 1s"},
		{Options{CommandTimeout: -time.Second}, "invalid -cmdtimeout=-1s: must be positive"},
	} {
		if err := c.o.Normalize(); err == nil || err.Error() != c.want {
			t.Errorf("%+v: %v, want %q", c.o, err, c.want)
		}
	}
	if !SetsProfile(ModeBoot) || SetsProfile(ModeTest) || !Activates(ModeTest) || Activates(ModeDryActivate) {
		t.Fatal("mode semantics")
	}
}

func TestValidateTargetBeforeAnyShell(t *testing.T) {
	ok := inventory.Target{Name: "lab-server", Facts: inventory.Facts{Address: "10.0.0.1", User: "monibahmed"}}
	if err := ValidateTarget(ok); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []inventory.Target{
		{Name: "lab;rm", Facts: inventory.Facts{Address: "10.0.0.1", User: "u"}},
		{Name: "x", Facts: inventory.Facts{Address: "$(id)", User: "u"}},
		{Name: "x", Facts: inventory.Facts{Address: "10.0.0.1", User: "u u"}},
		{Name: "x", Facts: inventory.Facts{Address: "fe80::1", User: "u"}},
	} {
		if err := ValidateTarget(bad); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

func TestAttributeErrors(t *testing.T) {
	p := &nix.LogParser{}
	p.Write([]byte(`@nix {"action":"msg","level":0,"file":"/nix/store/wn3291ahkkp1fxc5y8dzhjkqf65fiawk-source/targets/lab-server/configuration.nix","line":12,"column":19,"msg":"error: x","raw_msg":"cannot add a string to an integer"}` + "\n"))
	p.Write([]byte(`@nix {"action":"msg","level":0,"msg":"error: builder for '/nix/store/g1yal0h7rg50ssqmcbz4wrg62mwfv6vn-nixos-system-media-center-26.11pre-double.drv' failed with exit code 1","raw_msg":"builder for '/nix/store/g1yal0h7rg50ssqmcbz4wrg62mwfv6vn-nixos-system-media-center-26.11pre-double.drv' failed with exit code 1"}` + "\n"))
	got := attribute(p, []string{"dev-workstation", "lab-server", "media-center"}, "/repo", nil)
	if len(got) != 2 || got["dev-workstation"] != nil {
		t.Fatalf("attributed: %v", got)
	}
	if !strings.Contains(got["lab-server"].Error(), "targets/lab-server/configuration.nix:12:19: cannot add a string to an integer") {
		t.Errorf("lab-server: %v", got["lab-server"])
	}
	if !strings.Contains(got["media-center"].Error(), "build failed: builder for") {
		t.Errorf("media-center: %v", got["media-center"])
	}
	// A failed assertion names no derivation: nothing was built.
	p3 := &nix.LogParser{}
	p3.Write([]byte(`@nix {"action":"msg","level":0,"msg":"error:\n       Failed assertions:\n       - You must set the option ‘boot.loader.grub.devices’ or 'boot.loader.grub.mirroredBoots' to make the system bootable."}` + "\n"))
	if f := buildFailure("media-center", p3, "/repo", errors.New("exit status 1")); f == nil || !strings.Contains(f.Error(), "evaluation error: Failed assertions: - You must set the option ‘boot.loader.grub.devices’") ||
		strings.Contains(f.Error(), "build failed") || strings.Contains(f.Error(), "builder's output") {
		t.Errorf("assertion: %v", f)
	}
	// A failure without location or derivation that is no evaluation's
	// (a download during the build) is not called an evaluation error.
	p4 := &nix.LogParser{}
	p4.Write([]byte(`@nix {"action":"msg","level":0,"msg":"error: unable to download 'https://example.invalid/x.tar.gz': Couldn't resolve host name (6)"}` + "\n"))
	if f := buildFailure("media-center", p4, "/repo", errors.New("exit status 1")); f == nil || strings.Contains(f.Error(), "evaluation error") {
		t.Errorf("download: %v", f)
	}
	// An error in the shared modules fails every target.
	p2 := &nix.LogParser{}
	p2.Write([]byte(`@nix {"action":"msg","level":0,"file":"/nix/store/wn3291ahkkp1fxc5y8dzhjkqf65fiawk-source/targets/common/base.nix","line":3,"column":1,"msg":"e","raw_msg":"undefined variable 'x'"}` + "\n"))
	if got := attribute(p2, []string{"a", "b"}, "/repo", nil); len(got) != 2 {
		t.Errorf("common error attributed to %v", got)
	}
}

func TestSudoAskedOnce(t *testing.T) {
	asked := 0
	s := &Sudo{Prompt: func(ctx context.Context) (string, error) { asked++; return "pw", nil }}
	for i := 0; i < 3; i++ {
		if pw, err := s.Password(context.Background()); err != nil || pw != "pw" {
			t.Fatal(pw, err)
		}
	}
	if asked != 1 {
		t.Fatalf("asked %d times", asked)
	}
	if _, err := (&Sudo{}).Password(context.Background()); err != ErrNoSudoPrompt {
		t.Fatalf("no prompt: %v", err)
	}
}
