package discover

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/monibahmed/nixos-config/internal/inventory"
)

func TestParseSubnet(t *testing.T) {
	if p, err := ParseSubnet("192.168.1.77/24", false); err != nil || p.String() != "192.168.1.0/24" {
		t.Fatalf("%v %v", p, err)
	}
	for cidr, want := range map[string]string{
		"192.168.1.0":    "invalid subnet",
		"banana":         "invalid subnet",
		"fd00::/64":      "only IPv4",
		"10.0.0.0/16":    "more than a /22",
		"8.8.8.0/24":     "not a private range",
		"192.168.0.0/21": "more than a /22",
	} {
		_, err := ParseSubnet(cidr, false)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", cidr, err, want)
		}
	}
	if _, err := ParseSubnet("10.0.0.0/16", true); err != nil {
		t.Errorf("-force: %v", err)
	}
	if _, err := ParseSubnet("10.1.0.0/22", false); err != nil {
		t.Errorf("/22 refused: %v", err)
	}
}

func TestHosts(t *testing.T) {
	h := Hosts(netip.MustParsePrefix("10.77.0.0/24"))
	if len(h) != 254 || h[0].String() != "10.77.0.1" || h[253].String() != "10.77.0.254" {
		t.Fatalf("%d hosts, %v..%v", len(h), h[0], h[len(h)-1])
	}
	if len(Hosts(netip.MustParsePrefix("10.0.0.8/31"))) != 2 {
		t.Fatal("/31")
	}
}

func TestLocalSubnets(t *testing.T) {
	ifs := []Interface{
		{Name: "lo", Up: true, Loop: true, Addrs: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/8")}},
		{Name: "eth0", Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("192.168.1.20/24"), netip.MustParsePrefix("fe80::1/64")}},
		{Name: "wlan0", Up: false, Addrs: []netip.Prefix{netip.MustParsePrefix("10.0.0.5/24")}},
		{Name: "br0", Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("192.168.1.21/24")}},
	}
	got, err := LocalSubnets(ifs, false)
	if err != nil || len(got) != 1 || got[0].String() != "192.168.1.0/24" {
		t.Fatalf("%v %v", got, err)
	}
	_, err = LocalSubnets(ifs[:1], false)
	if err != ErrNoInterface {
		t.Fatalf("only loopback: %v", err)
	}
	_, err = LocalSubnets([]Interface{{Name: "eth0", Up: true, Addrs: []netip.Prefix{netip.MustParsePrefix("10.0.0.5/8")}}}, false)
	if err == nil || !strings.Contains(err.Error(), "interface eth0: subnet 10.0.0.0/8") || !strings.Contains(err.Error(), "-force") {
		t.Fatalf("large interface subnet: %v", err)
	}
}

func TestMatch(t *testing.T) {
	inv := &inventory.Inventory{Targets: []inventory.Target{
		{Name: "lab-server", Facts: inventory.Facts{Address: "10.0.0.5"}},
		{Name: "media-center", Facts: inventory.Facts{Address: "media.home.arpa"}},
		{Name: "dev-workstation", Facts: inventory.Facts{Address: "10.0.0.9"}},
		{Name: "gone", Facts: inventory.Facts{Address: "10.0.0.50"}},
	}}
	hosts := []Host{
		{Address: "10.0.0.7", Hostname: "dev-workstation"}, // moved: matched by hostname
		{Address: "10.0.0.5", Hostname: "something-else"},  // address wins
		{Address: "10.0.0.6", ReverseDNS: "media.home.arpa."},
		{Address: "10.0.0.8", Hostname: "stranger"},
	}
	res := &Result{}
	match(hosts, inv, res)
	want := map[string]string{"10.0.0.5": "lab-server/address", "10.0.0.6": "media-center/address", "10.0.0.7": "dev-workstation/hostname", "10.0.0.8": "/"}
	for _, h := range hosts {
		if got := h.Target + "/" + h.MatchBy; got != want[h.Address] {
			t.Errorf("%s matched %s, want %s", h.Address, got, want[h.Address])
		}
	}
	if len(res.NotFound) != 1 || res.NotFound[0].Name != "gone" {
		t.Errorf("not found: %v", res.NotFound)
	}
	if hosts[0].Address != "10.0.0.5" {
		t.Errorf("not sorted by address: %v", hosts)
	}
}
