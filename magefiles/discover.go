//go:build mage

package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/monibahmed/nixos-config/internal/discover"
	"github.com/monibahmed/nixos-config/internal/sshx"
	"github.com/monibahmed/nixos-config/internal/ui"
)

type discoverFlags struct {
	force, json, lab, rdns *bool
	concurrency            *int
	timeout                *time.Duration
	user, resolver         *string
}

// Discover scans the IPv4 subnets of this machine's up, non-loopback
// interfaces for SSH servers and matches them to the inventory (see
// discover:subnet for what is reported).
func Discover(ctx context.Context,
	force *bool, // allow subnets larger than /22 and non-private ranges
	JSON *bool, // machine-readable output (-json)
	concurrency *int, // parallel TCP connects (default 256)
	timeout *time.Duration, // per connect (default 500ms)
	user *string, // user for SSH key authentication (default: the inventory's)
	lab *bool, // the lab's inventory, known_hosts and key
	rdns *bool, // reverse DNS lookups (default true; off with -lab unless -resolver is given)
	resolver *string, // DNS server (ip:port) for reverse lookups instead of the system's
) error {
	ifs, err := discover.SystemInterfaces()
	if err != nil {
		return err
	}
	subnets, err := discover.LocalSubnets(ifs, on(force))
	if err != nil {
		return err
	}
	return runDiscover(ctx, subnets, discoverFlags{force, JSON, lab, rdns, concurrency, timeout, user, resolver})
}

// Subnet scans one subnet for SSH servers, e.g. mage discover:subnet
// 192.168.1.0/24. For each open port 22 it reports the
// SSH version, the host key fingerprint and whether known_hosts knows it
// (known / unknown / changed; nothing is added), the reverse DNS name, and,
// when key authentication as the deploy user works, the hostname, whether it
// runs NixOS and its generation. Then the inventory targets not found.
func (DISCOVER) Subnet(ctx context.Context, cidr string,
	force *bool, // allow subnets larger than /22 and non-private ranges
	JSON *bool, // machine-readable output (-json)
	concurrency *int, // parallel TCP connects (default 256)
	timeout *time.Duration, // per connect (default 500ms)
	user *string, // user for SSH key authentication (default: the inventory's)
	lab *bool, // the lab's inventory, known_hosts and key
	rdns *bool, // reverse DNS lookups (default true; off with -lab unless -resolver is given)
	resolver *string, // DNS server (ip:port) for reverse lookups instead of the system's
) error {
	p, err := discover.ParseSubnet(cidr, on(force))
	if err != nil {
		return err
	}
	return runDiscover(ctx, []netip.Prefix{p}, discoverFlags{force, JSON, lab, rdns, concurrency, timeout, user, resolver})
}

func runDiscover(ctx context.Context, subnets []netip.Prefix, f discoverFlags) error {
	e, fl, err := openFleet(ctx, f.lab)
	if err != nil {
		return err
	}
	o := discover.Options{User: str(f.user), KnownHosts: fl.knownHosts, Identities: fl.identities}
	if len(o.KnownHosts) == 0 {
		o.KnownHosts = []string{sshx.DefaultKnownHosts()}
	}
	if o.User == "" && len(fl.inv.Targets) > 0 {
		o.User = fl.inv.Targets[0].User
	}
	if f.concurrency != nil {
		o.Concurrency = *f.concurrency
	}
	if f.timeout != nil {
		o.Timeout = *f.timeout
	}
	// Lab addresses have no reverse DNS, and the lab never sends queries to
	// the system's resolver: with -lab only an explicit -resolver is used.
	wantRDNS := (f.rdns == nil || *f.rdns) && (!fl.lab || str(f.resolver) != "")
	if wantRDNS {
		o.Resolver = net.DefaultResolver
		if r := str(f.resolver); r != "" {
			if _, err := netip.ParseAddrPort(r); err != nil {
				return fmt.Errorf("invalid -resolver=%q: give ip:port, e.g. 192.168.1.1:53", r)
			}
			o.Resolver = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, network, r)
			}}
		}
	}
	total := 0
	var names []string
	for _, p := range subnets {
		total += len(discover.Hosts(p))
		names = append(names, p.String())
	}
	var board *ui.Board
	if e.out.TTY && !on(f.json) {
		board = ui.NewBoard(os.Stderr, e.out.Color)
		board.Bar("scan", "scan "+strings.Join(names, ", ")+" ", int64(total), false)
		o.Progress = func(done, _ int) { board.Set("scan", int64(done)) }
	} else if !on(f.json) {
		conc := o.Concurrency
		if conc <= 0 {
			conc = 256
		}
		e.out.Linef("discover: scanning %d addresses in %s (port 22, %d at a time)", total, strings.Join(names, ", "), conc)
	}
	res, err := discover.Scan(ctx, subnets, fl.inv, o)
	if board != nil {
		board.Stop()
	}
	if err != nil {
		return err
	}
	if on(f.json) {
		return writeJSON(res)
	}
	e.out.Linef("discover: %d SSH hosts among %d addresses in %s", len(res.Hosts), res.Scanned, res.Duration.Round(10*time.Millisecond))
	var rows [][]string
	var notes []string
	for _, h := range res.Hosts {
		// Every string of h that came from the host is validated or
		// sanitized by the discover package; ui.Table sanitizes again.
		host := h.Hostname
		if host == "" {
			host = "?"
		}
		if h.ReverseDNS != "" {
			host += " (" + h.ReverseDNS + ")"
		}
		target := h.Target
		if target == "" {
			target = e.out.Warning("not in inventory")
		} else {
			target += " (by " + h.MatchBy + ")"
		}
		key := h.KeyStatus
		switch key {
		case discover.KeyKnown:
			key = e.out.OK(key)
		case discover.KeyChanged:
			key = e.out.Bad("CHANGED")
		case discover.KeyOtherType:
			key = e.out.Bad("OTHER KEY TYPE")
		case discover.KeyRevoked:
			key = e.out.Bad("REVOKED")
		case discover.KeyUnknown:
			if len(h.KeyKnownFor) > 0 {
				key = e.out.Warning("unknown here, known for " + strings.Join(h.KeyKnownFor, ","))
			} else {
				key = e.out.Warning(key)
			}
		}
		nixos := "-"
		switch {
		case h.NixOS && h.Generation > 0:
			nixos = "yes, gen " + strconv.Itoa(h.Generation)
		case h.NixOS:
			nixos = "yes"
		case h.LoggedIn:
			nixos = "no"
		case h.AuthError != "":
			nixos = "? (" + h.AuthError + ")"
		}
		rows = append(rows, []string{h.Address, host, target, key, h.Fingerprint, nixos, h.SSHVersion})
		for _, n := range h.Notes {
			notes = append(notes, h.Address+": "+ui.Sanitize(n, 0))
		}
	}
	if err := ui.Table(os.Stdout, []string{"ADDRESS", "HOSTNAME", "TARGET", "KEY", "FINGERPRINT", "NIXOS", "SSH"}, rows); err != nil {
		return err
	}
	for _, n := range notes {
		fmt.Println(e.out.Warning("note:"), n)
	}
	if len(res.NotFound) > 0 {
		var nf []string
		for _, t := range res.NotFound {
			nf = append(nf, fmt.Sprintf("%s (%s)", t.Name, t.Address))
		}
		fmt.Printf("not found: %s\n", strings.Join(nf, ", "))
	}
	return nil
}
