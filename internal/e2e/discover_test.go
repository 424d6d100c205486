package e2e

import (
	"context"
	"regexp"
	"strings"
	"testing"

	"github.com/monibahmed/nixos-config/internal/testutil"
)

func TestDiscoverSubnetErrors(t *testing.T) {
	dir := testutil.CopyRepo(t)
	for args, want := range map[string]string{
		"banana":         `invalid subnet "banana"`,
		"10.0.0.0/16":    "more than a /22: scan a smaller subnet, or pass -force",
		"203.0.113.0/24": "not a private range",
	} {
		r := mage(t, dir, "discover:subnet", args)
		assertFails(t, r, want)
	}
}

// The lab subnet only; the lab never asks the system's resolver.
func TestDiscoverLab(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	succeeds(t, f.mage("deploy", "lab-server", "-", "-lab"))
	f.lab.StopSSHD(ctx, "media-center")
	t.Cleanup(func() { f.lab.StartSSHD(ctx, "media-center") })
	r := f.mage("discover:subnet", "10.77.50.0/24", "-lab")
	succeeds(t, r)
	fp, err := f.lab.Fingerprint("stranger")
	if err != nil || fp == "" {
		t.Fatalf("fingerprint of stranger: %q %v", fp, err)
	}
	for _, re := range []string{
		`discover: 4 SSH hosts among 254 addresses`,
		`10\.77\.50\.202\s+bastion\s+not in inventory\s+known`,
		`10\.77\.50\.11\s+lab-server\s+lab-server \(by address\)\s+known\s+SHA256:\S+\s+yes, gen 1\s+SSH-2\.0-OpenSSH`,
		`10\.77\.50\.10\s+dev-workstation\s+dev-workstation \(by address\)\s+known`,
		`10\.77\.50\.200\s+stranger\s+not in inventory\s+unknown\s+` + regexp.QuoteMeta(fp),
		`not found: media-center \(10\.77\.50\.12\)`,
	} {
		if !regexp.MustCompile(re).MatchString(r.Stdout) {
			t.Errorf("discover output lacks %s:\n%s", re, r.Stdout)
		}
	}
	if strings.Contains(r.Stdout, "10.77.50.201") {
		t.Error("the host without sshd is listed")
	}
}
