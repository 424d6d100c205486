package discover

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/monibahmed/nixos-config/internal/inventory"
	"github.com/monibahmed/nixos-config/internal/lab"
	"github.com/monibahmed/nixos-config/internal/run"
	"github.com/monibahmed/nixos-config/internal/testutil"
)

// ptrServer answers reverse lookups for the lab on loopback, so reverse DNS
// is tested without any query leaving the machine.
func ptrServer(t *testing.T, names map[string]string) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			var p dnsmessage.Parser
			hdr, err := p.Start(buf[:n])
			if err != nil {
				continue
			}
			q, err := p.Question()
			if err != nil {
				continue
			}
			b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: hdr.ID, Response: true, Authoritative: true, RCode: dnsmessage.RCodeNameError})
			name, ok := names[q.Name.String()]
			if ok && q.Type == dnsmessage.TypePTR {
				b = dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: hdr.ID, Response: true, Authoritative: true})
			}
			b.StartQuestions()
			b.Question(q)
			if ok && q.Type == dnsmessage.TypePTR {
				b.StartAnswers()
				b.PTRResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60}, dnsmessage.PTRResource{PTR: dnsmessage.MustNewName(name)})
			}
			msg, _ := b.Finish()
			pc.WriteTo(msg, addr)
		}
	}()
	return pc.LocalAddr().String()
}

func reverseName(a string) string {
	ip := netip.MustParseAddr(a).As4()
	return fmt.Sprintf("%d.%d.%d.%d.in-addr.arpa.", ip[3], ip[2], ip[1], ip[0])
}

func TestScanLab(t *testing.T) {
	testutil.RequireRoot(t)
	missing := lab.Prerequisites()
	testutil.Require(t, len(missing) == 0, "the lab needs %s", strings.Join(missing, ", "))
	ctx := context.Background()
	l, err := lab.New(lab.Config{Name: "dsc", StateDir: filepath.Join(t.TempDir(), "state"), Subnet: "10.77.60.0/24",
		Targets: []string{"alpha", "beta", "gamma", "delta"}, Extras: true}, run.Exec{})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Up(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Down(context.Background()) })
	// alpha runs a system generation, beta is down, gamma has a new host key,
	// delta moved: the inventory still has an old address for it.
	// The lab hosts see this machine's /tmp: the directory goes afterwards.
	t.Cleanup(func() { os.RemoveAll("/tmp/sys") })
	if _, err := l.Exec(ctx, "alpha", "sh", "-c", "mkdir -p /tmp/sys && echo 26.11pre-test > /tmp/sys/nixos-version && ln -s /tmp/sys /run/current-system && ln -s /tmp/sys /nix/var/nix/profiles/system-3-link && ln -s system-3-link /nix/var/nix/profiles/system"); err != nil {
		t.Fatal(err)
	}
	if err := l.StopSSHD(ctx, "beta"); err != nil {
		t.Fatal(err)
	}
	if err := l.RotateHostKey(ctx, "gamma"); err != nil {
		t.Fatal(err)
	}
	inv, err := inventory.LoadFile(l.InventoryPath())
	if err != nil {
		t.Fatal(err)
	}
	for i := range inv.Targets {
		if inv.Targets[i].Name == "delta" {
			inv.Targets[i].Address = "10.77.60.99"
		}
	}
	stranger, _ := l.Host(lab.StrangerName)
	alpha, _ := l.Host("alpha")
	dns := ptrServer(t, map[string]string{reverseName(alpha.Address): "alpha.lab.home.arpa.", reverseName(stranger.Address): "stranger.lab.home.arpa."})
	resolver := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", dns)
	}}

	res, err := Scan(ctx, []netip.Prefix{netip.MustParsePrefix("10.77.60.0/24")}, inv, Options{
		User: "monibahmed", KnownHosts: []string{l.KnownHostsPath()}, Identities: []string{l.IdentityPath()}, Resolver: resolver, Timeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	byAddr := map[string]Host{}
	for _, h := range res.Hosts {
		byAddr[h.Address] = h
	}
	a := byAddr[alpha.Address]
	if a.Target != "alpha" || a.MatchBy != "address" || a.Hostname != "alpha" || !a.NixOS || a.Generation != 3 || a.Version != "26.11pre-test" ||
		a.KeyStatus != KeyKnown || a.ReverseDNS != "alpha.lab.home.arpa" || !strings.HasPrefix(a.SSHVersion, "SSH-2.0-OpenSSH") {
		t.Errorf("alpha: %+v", a)
	}
	fp, _ := l.Fingerprint(lab.StrangerName)
	s := byAddr[stranger.Address]
	if s.Target != "" || s.Fingerprint != fp || s.KeyStatus != KeyUnknown || s.Hostname != lab.StrangerName {
		t.Errorf("stranger: %+v (fingerprint %s)", s, fp)
	}
	silent, _ := l.Host(lab.SilentName)
	if _, ok := byAddr[silent.Address]; ok {
		t.Error("the host without sshd is listed")
	}
	gamma, _ := l.Host("gamma")
	g := byAddr[gamma.Address]
	if g.KeyStatus != KeyChanged || g.LoggedIn || g.Target != "gamma" {
		t.Errorf("gamma: %+v", g)
	}
	delta, _ := l.Host("delta")
	if d := byAddr[delta.Address]; d.Target != "delta" || d.MatchBy != "hostname" {
		t.Errorf("delta: %+v", d)
	}
	var notFound []string
	for _, nf := range res.NotFound {
		notFound = append(notFound, nf.Name)
	}
	if strings.Join(notFound, ",") != "beta" {
		t.Errorf("not found: %v", notFound)
	}
	if len(res.Hosts) != 4 {
		t.Errorf("hosts: %+v", res.Hosts)
	}
	// known_hosts was not touched: the stranger's key is still unknown to it.
	kh, _ := os.ReadFile(l.KnownHostsPath())
	if strings.Contains(string(kh), stranger.Address) {
		t.Error("discovery wrote to known_hosts")
	}
}
