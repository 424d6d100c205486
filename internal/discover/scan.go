package discover

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/monibahmed/nixos-config/internal/inventory"
	"github.com/monibahmed/nixos-config/internal/trouble"
)

// Key statuses against known_hosts.
const (
	KeyKnown   = "known"
	KeyUnknown = "unknown"
	KeyChanged = "changed"
	// KeyOtherType: known_hosts has keys for the address, but the host
	// offers none of their types (a host key problem, like a changed key).
	KeyOtherType = "other-type"
	// KeyRevoked: known_hosts marks the key @revoked.
	KeyRevoked = "revoked"
)

// Host is one machine with an open SSH port. Every string in it that came
// from the host (or its DNS) is validated or sanitized (ui.Sanitize) and
// bounded: it is safe to print and to encode.
type Host struct {
	Address     string `json:"address"`
	ReverseDNS  string `json:"reverseDNS,omitempty"`
	SSHVersion  string `json:"sshVersion,omitempty"`
	Fingerprint string `json:"fingerprint,omitempty"`
	KeyStatus   string `json:"keyStatus,omitempty"`
	// Only when key authentication as the deploy user worked:
	LoggedIn   bool   `json:"loggedIn"`
	AuthError  string `json:"authError,omitempty"`
	Hostname   string `json:"hostname,omitempty"`
	NixOS      bool   `json:"nixos"`
	Version    string `json:"nixosVersion,omitempty"`
	Generation int    `json:"generation,omitempty"`
	// Target is the inventory target it matched ("" if none), and how:
	// "address", "host key" (known_hosts has its key for the target's
	// address: it moved) or "hostname" (what it says its name is: weak).
	Target  string `json:"target,omitempty"`
	MatchBy string `json:"matchedBy,omitempty"`
	// KeyKnownFor: other known_hosts entries with the key this host presents
	// when it is unknown at this address.
	KeyKnownFor []string `json:"keyKnownFor,omitempty"`
	// Notes are warnings for a person: a moved or spoofed key, a key type
	// mismatch, output that was cut or not valid.
	Notes []string `json:"notes,omitempty"`
}

// Result of a discovery.
type Result struct {
	Subnets  []string           `json:"subnets"`
	Scanned  int                `json:"scanned"`
	Hosts    []Host             `json:"hosts"`
	NotFound []inventory.Target `json:"notFound"`
	Duration time.Duration      `json:"duration"`
}

// Options of a scan.
type Options struct {
	Port        int           // default 22
	Concurrency int           // parallel connects, default 256
	Timeout     time.Duration // per connect, default 500ms
	// HostTimeout bounds the SSH handshake with each open host, and then the
	// probe after it, each; default 5s. A host cannot hold a scan longer.
	HostTimeout time.Duration
	User        string // deploy user for key authentication
	KnownHosts  []string
	Identities  []string // empty: agent and ~/.ssh/id_*
	// Resolver for reverse DNS; nil disables it.
	Resolver *net.Resolver
	// Progress is called as connects finish (done, total).
	Progress func(done, total int)
}

func (o *Options) defaults() {
	if o.Port == 0 {
		o.Port = 22
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 256
	}
	if o.Timeout <= 0 {
		o.Timeout = 500 * time.Millisecond
	}
	if o.User == "" {
		o.User = inventory.DefaultUser
	}
	if o.HostTimeout <= 0 {
		o.HostTimeout = 5 * time.Second
	}
}

// ErrPermission explains socket errors caused by missing rights or limits.
func permissionError(err error) error {
	if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
		return fmt.Errorf("too many open files while scanning: lower -concurrency or raise the limit (ulimit -n): %w", err)
	}
	if errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM) {
		return fmt.Errorf("not allowed to open connections (a firewall or sandbox forbids it): %w", err)
	}
	return nil
}

// Scan finds open SSH ports in the subnets and inspects those hosts.
func Scan(ctx context.Context, subnets []netip.Prefix, inv *inventory.Inventory, o Options) (*Result, error) {
	o.defaults()
	start := time.Now()
	var addrs []netip.Addr
	res := &Result{}
	for _, p := range subnets {
		res.Subnets = append(res.Subnets, p.String())
		addrs = append(addrs, Hosts(p)...)
	}
	res.Scanned = len(addrs)

	// 1. TCP connects, bounded.
	open := make([]bool, len(addrs))
	var done int
	var mu sync.Mutex
	var fatal error
	sem := make(chan struct{}, o.Concurrency)
	var wg sync.WaitGroup
	for i, a := range addrs {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			d := net.Dialer{Timeout: o.Timeout}
			c, err := d.DialContext(ctx, "tcp", netip.AddrPortFrom(a, uint16(o.Port)).String())
			mu.Lock()
			if err == nil {
				open[i] = true
				c.Close()
			} else if pe := permissionError(err); pe != nil && fatal == nil {
				fatal = pe
			}
			done++
			n := done
			mu.Unlock()
			if o.Progress != nil {
				o.Progress(n, len(addrs))
			}
		}()
	}
	wg.Wait()
	if fatal != nil {
		return nil, fatal
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	// 2. Inspect the open hosts.
	var hosts []Host
	for i, a := range addrs {
		if open[i] {
			hosts = append(hosts, Host{Address: a.String()})
		}
	}
	inspect := make(chan struct{}, 32)
	for i := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			inspect <- struct{}{}
			defer func() { <-inspect }()
			inspectHost(ctx, &hosts[i], o)
		}()
	}
	wg.Wait()

	match(hosts, inv, res)
	for i := range hosts {
		h := &hosts[i]
		switch {
		case len(h.KeyKnownFor) == 0 || h.MatchBy == "host key":
		case h.KeyStatus == KeyChanged:
			h.Notes = append(h.Notes, fmt.Sprintf("host key changed at %s, and known_hosts has the key it presents for %s: machines swapped addresses, or something answers with a copy of that key (spoofing); verify the fingerprint on the machines' consoles (%s)",
				h.Address, strings.Join(h.KeyKnownFor, ", "), trouble.See(trouble.HostKeys)))
		default:
			h.Notes = append(h.Notes, fmt.Sprintf("host key unknown at %s, but known_hosts has it for %s: the host moved, or something answers with a copy of its key (spoofing); verify the fingerprint on the machine's console (%s)",
				h.Address, strings.Join(h.KeyKnownFor, ", "), trouble.See(trouble.HostKeys)))
		}
	}
	res.Hosts = hosts
	res.Duration = time.Since(start)
	return res, nil
}

// match assigns inventory targets by address, then by host key (the key
// known_hosts has for a target's address: the machine moved), then by the
// hostname the host reports (weak: any machine can claim a name), and lists
// the targets that were not found.
func match(hosts []Host, inv *inventory.Inventory, res *Result) {
	if inv == nil {
		return
	}
	used := map[string]bool{}
	for i := range hosts {
		for _, t := range inv.Targets {
			if t.Address == hosts[i].Address || (hosts[i].ReverseDNS != "" && strings.EqualFold(strings.TrimSuffix(t.Address, "."), strings.TrimSuffix(hosts[i].ReverseDNS, "."))) {
				hosts[i].Target, hosts[i].MatchBy = t.Name, "address"
				used[t.Name] = true
				break
			}
		}
	}
	for i := range hosts {
		if hosts[i].Target != "" || len(hosts[i].KeyKnownFor) == 0 {
			continue
		}
		for _, t := range inv.Targets {
			if !used[t.Name] && slices.Contains(hosts[i].KeyKnownFor, t.Address) {
				hosts[i].Target, hosts[i].MatchBy = t.Name, "host key"
				used[t.Name] = true
				hosts[i].Notes = append(hosts[i].Notes, fmt.Sprintf("%s moved? Its host key is unknown at %s but known for %s, %s's address in the inventory: if the machine really moved, update targets/%s/target.json and known_hosts (%s)",
					t.Name, hosts[i].Address, t.Address, t.Name, t.Name, trouble.See(trouble.HostKeys)))
				break
			}
		}
	}
	for i := range hosts {
		if hosts[i].Target != "" || hosts[i].Hostname == "" {
			continue
		}
		for _, t := range inv.Targets {
			if t.Name == hosts[i].Hostname && !used[t.Name] {
				hosts[i].Target, hosts[i].MatchBy = t.Name, "hostname"
				used[t.Name] = true
				if hosts[i].KeyStatus != KeyKnown {
					hosts[i].Notes = append(hosts[i].Notes, fmt.Sprintf("calls itself %s, but its host key is not the one known_hosts has for %s (%s): a reinstalled machine, or another machine claiming the name; verify the fingerprint on %s's console before trusting it (%s)",
						t.Name, t.Name, t.Address, t.Name, trouble.See(trouble.HostKeys)))
				}
				break
			}
		}
	}
	for _, t := range inv.Targets {
		if !used[t.Name] {
			res.NotFound = append(res.NotFound, t)
		}
	}
	sort.Slice(hosts, func(i, j int) bool {
		a, _ := netip.ParseAddr(hosts[i].Address)
		b, _ := netip.ParseAddr(hosts[j].Address)
		return a.Less(b)
	})
}
