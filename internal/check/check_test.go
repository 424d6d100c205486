package check

import (
	"strings"
	"testing"

	"github.com/monibahmed/nixos-config/internal/inventory"
)

func ptr[T any](v T) *T { return &v }

func TestSecurityWarnings(t *testing.T) {
	inv := &inventory.Inventory{Targets: []inventory.Target{
		{Name: "good", Facts: inventory.Facts{User: "monibahmed"}},
		{Name: "bad", Facts: inventory.Facts{User: "monibahmed"}},
	}}
	facts := map[string]securityFacts{
		"good": {SSHEnabled: true, PasswordAuthentication: ptr(false), KbdInteractiveAuthentication: ptr(false),
			PermitRootLogin: ptr("no"), AuthorizedKeys: map[string]int{"monibahmed": 1}},
		"bad": {SSHEnabled: true, PasswordAuthentication: ptr(true), KbdInteractiveAuthentication: ptr(false),
			PermitRootLogin: ptr("yes"), BootstrapPassword: []string{"monibahmed"}, JupyterPlaceholder: true,
			AuthorizedKeys: map[string]int{"monibahmed": 0}},
	}
	w := SecurityWarnings(inv, facts)
	all := strings.Join(w, "\n")
	if strings.Contains(all, "good:") {
		t.Fatalf("a hardened target got warnings:\n%s", all)
	}
	for _, want := range []string{
		"bad: bootstrap password still set for monibahmed",
		"bad: no SSH authorized keys for the deploy user monibahmed",
		"bad: password SSH login enabled",
		"bad: root login allowed over SSH (PermitRootLogin = yes)",
		"bad: services.jupyter.password is still the placeholder",
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
}
