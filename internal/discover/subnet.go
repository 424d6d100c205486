// Package discover finds SSH hosts on the local network: a concurrent TCP
// scan of port 22, then for each open host its SSH banner, host key (checked
// against known_hosts, never added), reverse DNS name, and, when key
// authentication as the deploy user works, its hostname, whether it runs
// NixOS and its current system generation. Hosts are matched to the
// inventory by address, else by hostname.
package discover

import (
	"errors"
	"fmt"
	"github.com/monibahmed/nixos-config/internal/trouble"
	"net"
	"net/netip"
)

// MaxPrefixBits: subnets larger than a /22 (1022 hosts) need -force.
const MaxPrefixBits = 22

// ParseSubnet validates a CIDR for scanning: IPv4, at most a /22 and a
// private range unless force.
func ParseSubnet(cidr string, force bool) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return p, fmt.Errorf("invalid subnet %q: write it as an IPv4 network in CIDR form, e.g. 192.168.1.0/24 (%s)", cidr, trouble.See(trouble.Discovery))
	}
	if !p.Addr().Is4() {
		return p, fmt.Errorf("invalid subnet %q: only IPv4 subnets can be scanned (an IPv6 /64 is too large to scan)", cidr)
	}
	p = p.Masked()
	if p.Bits() < MaxPrefixBits && !force {
		return p, fmt.Errorf("subnet %s has %d addresses, more than a /%d: scan a smaller subnet, or pass -force (%s)", p, 1<<(32-p.Bits()), MaxPrefixBits, trouble.See(trouble.Discovery))
	}
	if !p.Addr().IsPrivate() && !force {
		return p, fmt.Errorf("subnet %s is not a private range (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16): discovery is for your own LAN; pass -force if this really is yours (%s)", p, trouble.See(trouble.Discovery))
	}
	return p, nil
}

// Hosts lists the addresses to scan in p: all but the network and
// broadcast addresses (for prefixes shorter than /31).
func Hosts(p netip.Prefix) []netip.Addr {
	var out []netip.Addr
	first := p.Addr()
	n := 1 << (32 - p.Bits())
	a := first
	for i := 0; i < n; i++ {
		if p.Bits() >= 31 || (i != 0 && i != n-1) {
			out = append(out, a)
		}
		a = a.Next()
	}
	return out
}

// Interface is what the subnet lookup needs to know about an interface.
type Interface struct {
	Name  string
	Up    bool
	Loop  bool
	Addrs []netip.Prefix
}

// SystemInterfaces reads this machine's interfaces.
func SystemInterfaces() ([]Interface, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("listing network interfaces: %w", err)
	}
	var out []Interface
	for _, i := range ifs {
		it := Interface{Name: i.Name, Up: i.Flags&net.FlagUp != 0, Loop: i.Flags&net.FlagLoopback != 0}
		addrs, err := i.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok {
				if p, err := netip.ParsePrefix(ipn.String()); err == nil {
					it.Addrs = append(it.Addrs, p)
				}
			}
		}
		out = append(out, it)
	}
	return out, nil
}

// ErrNoInterface: nothing to scan.
var ErrNoInterface = errors.New("no usable network interface: no interface is up with an IPv4 address (besides loopback); connect to the LAN, or name a subnet with mage discover:subnet <cidr>")

// LocalSubnets returns the IPv4 subnets of the up, non-loopback interfaces,
// each checked like ParseSubnet.
func LocalSubnets(ifs []Interface, force bool) ([]netip.Prefix, error) {
	var out []netip.Prefix
	seen := map[netip.Prefix]bool{}
	var errs []error
	for _, i := range ifs {
		if !i.Up || i.Loop {
			continue
		}
		for _, a := range i.Addrs {
			if !a.Addr().Is4() || a.Addr().IsLinkLocalUnicast() {
				continue
			}
			p, err := ParseSubnet(a.Masked().String(), force)
			if err != nil {
				errs = append(errs, fmt.Errorf("interface %s: %w", i.Name, err))
				continue
			}
			if !seen[p] {
				seen[p] = true
				out = append(out, p)
			}
		}
	}
	if len(out) == 0 {
		if len(errs) > 0 {
			return nil, errors.Join(errs...)
		}
		return nil, ErrNoInterface
	}
	return out, nil
}
