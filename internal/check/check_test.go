package check

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/monibahmed/nixos-config/internal/inventory"
	"github.com/monibahmed/nixos-config/internal/nix"
	"github.com/monibahmed/nixos-config/internal/ui"
)

func ptr[T any](v T) *T { return &v }

func TestSecurityWarnings(t *testing.T) {
	inv := &inventory.Inventory{Targets: []inventory.Target{
		{Name: "good", Facts: inventory.Facts{User: "monibahmed"}},
		{Name: "bad", Facts: inventory.Facts{User: "monibahmed"}},
	}}
	facts := map[string]securityFacts{
		"good": {SSHEnabled: true, PasswordAuthentication: ptr(false), KbdInteractiveAuthentication: ptr(false),
			PermitRootLogin: ptr("no"), AuthorizedKeys: map[string]int{"monibahmed": 1},
			Jupyter:   &jupyterFacts{IP: "127.0.0.1", Port: 8888, User: "jupyter", LoginShell: "/nix/store/x-shadow/bin/nologin"},
			OpenPorts: []int{22}, FirewallEnabled: ptr(true), TrustedUsers: []string{"root"},
			Jellyfin: &jellyfinFacts{OpenFirewall: false}},
		"bad": {SSHEnabled: true, PasswordAuthentication: ptr(true), KbdInteractiveAuthentication: ptr(false),
			PermitRootLogin: ptr("yes"), PasswordsInStore: []string{"monibahmed.initialPassword", "root.hashedPassword"},
			AuthorizedKeys: map[string]int{"monibahmed": 0},
			Jupyter:        &jupyterFacts{Placeholder: true, IP: "0.0.0.0", Port: 8888, User: "jupyter", LoginShell: "/bin/bash"},
			OpenPorts:      []int{22, 8888}, FirewallEnabled: ptr(false),
			NixServe:    &nixServeFacts{BindAddress: "0.0.0.0", Port: 5000},
			Jellyfin:    &jellyfinFacts{OpenFirewall: true},
			PostgresTCP: true, PostgresTrust: true, BootEditor: true,
			TrustedUsers: []string{"root", "@wheel"}, ExtraTrustedUsers: []string{"monibahmed"}},
	}
	w := SecurityWarnings(inv, facts)
	all := strings.Join(w, "\n")
	if strings.Contains(all, "good:") {
		t.Fatalf("a hardened target got warnings:\n%s", all)
	}
	for _, want := range []string{
		"bad: users.users.monibahmed.initialPassword puts a password in the world-readable Nix store",
		"bad: users.users.root.hashedPassword puts a password hash in the world-readable Nix store",
		"hashedPasswordFile",
		"bad: no SSH authorized keys for the deploy user monibahmed",
		"bad: password SSH login enabled",
		"bad: root login allowed over SSH (PermitRootLogin = yes)",
		"bad: services.jupyter.password is still the placeholder",
		"bad: Jupyter listens on 0.0.0.0:8888 over plain HTTP",
		"bind services.jupyter.ip to 127.0.0.1",
		"opens Jupyter's port 8888 on every interface",
		"bad: the jupyter account has a login shell (/bin/bash)",
		"bad: nix-serve listens on every address",
		"bad: Jellyfin is open on every interface (services.jellyfin.openFirewall opens TCP 8096 and 8920",
		"whoever on the LAN opens port 8096 first becomes its administrator: finish the wizard right after the first deploy",
		"bad: PostgreSQL listens on every interface",
		`uses "trust"`,
		"set boot.loader.systemd-boot.editor = false",
		"bad: the firewall is off",
		"bad: nix.settings.trusted-users trusts @wheel, monibahmed: a trusted Nix user is root-equivalent",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("missing %q in:\n%s", want, all)
		}
	}
	// NixOS defaults (settings unset) allow passwords and root keys.
	w = SecurityWarnings(inv, map[string]securityFacts{"good": {SSHEnabled: true, AuthorizedKeys: map[string]int{"monibahmed": 2}}})
	if len(w) != 2 {
		t.Fatalf("unset settings should warn twice, got %v", w)
	}
	// A localhost Jupyter needs no open port; a bound nix-serve still serves the whole store.
	w = SecurityWarnings(inv, map[string]securityFacts{"good": {AuthorizedKeys: map[string]int{"monibahmed": 1},
		Jupyter:   &jupyterFacts{IP: "localhost", Port: 8888, User: "jupyter", LoginShell: "/bin/bash", TerminalsOff: true},
		OpenPorts: []int{8888}, NixServe: &nixServeFacts{BindAddress: "192.168.1.50", Port: 5000}}})
	all = strings.Join(w, "\n")
	if len(w) != 2 || !strings.Contains(all, "port 8888 is open in the firewall but Jupyter listens only on localhost") ||
		!strings.Contains(all, "whoever reaches 192.168.1.50:5000") {
		t.Fatalf("got %v", w)
	}
	// Jellyfin's port opened by hand is as open as openFirewall.
	w = SecurityWarnings(inv, map[string]securityFacts{"good": {AuthorizedKeys: map[string]int{"monibahmed": 1},
		Jellyfin: &jellyfinFacts{}, OpenPorts: []int{22, 8096}}})
	if len(w) != 1 || !strings.Contains(w[0], "good: Jellyfin is open on every interface (networking.firewall.allowedTCPPorts opens 8096)") {
		t.Fatalf("got %v", w)
	}
}

type envFailingNix struct{ Nix }

func (envFailingNix) ParseFile(ctx context.Context, path string) error {
	return nix.Environment("error: getting status of '/nix/var/nix/daemon-socket/socket': Permission denied")
}

func (e envFailingNix) ParseFiles(ctx context.Context, paths []string) error {
	return e.ParseFile(ctx, "")
}

type twoFiles struct{ Git }

func (twoFiles) Tracked(ctx context.Context, pathspecs ...string) ([]string, error) {
	return []string{"a.nix", "b.nix"}, nil
}

// A user the Nix daemon refuses gets one error naming that, not a parse
// error in every file.
func TestParseStageNamesTheInstallationProblem(t *testing.T) {
	root := t.TempDir()
	for _, f := range []string{"a.nix", "b.nix"} {
		if err := os.WriteFile(filepath.Join(root, f), []byte("{ }\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var out strings.Builder
	c := &Checker{Nix: envFailingNix{}, Git: twoFiles{}, Out: ui.New(&out)}
	_, err := c.Run(context.Background(), Options{Root: root})
	if err == nil {
		t.Fatal("expected an error")
	}
	msg := err.Error()
	for _, want := range []string{"stage 1/4 (parse)", "may not use the Nix daemon", "nix-users", "run as root", "nix-on-this-machine"} {
		if !strings.Contains(msg, want) {
			t.Errorf("%q lacks %q", msg, want)
		}
	}
	for _, bad := range []string{"fix the syntax", ":0:0", "more problems"} {
		if strings.Contains(msg, bad) {
			t.Errorf("%q contains %q", msg, bad)
		}
	}
}
