package discover

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/skeema/knownhosts"
	"golang.org/x/crypto/ssh"

	"github.com/monibahmed/nixos-config/internal/inventory"
	"github.com/monibahmed/nixos-config/internal/nix"
	"github.com/monibahmed/nixos-config/internal/sshx"
)

// Key statuses against known_hosts.
const (
	KeyKnown   = "known"
	KeyUnknown = "unknown"
	KeyChanged = "changed"
)

// Host is one machine with an open SSH port.
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
	// Target is the inventory target it matched ("" if none), and how.
	Target  string `json:"target,omitempty"`
	MatchBy string `json:"matchedBy,omitempty"`
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
	User        string        // deploy user for key authentication
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
	res.Hosts = hosts
	res.Duration = time.Since(start)
	return res, nil
}

// match assigns inventory targets by address, then by hostname, and lists
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
		if hosts[i].Target != "" || hosts[i].Hostname == "" {
			continue
		}
		for _, t := range inv.Targets {
			if t.Name == hosts[i].Hostname && !used[t.Name] {
				hosts[i].Target, hosts[i].MatchBy = t.Name, "hostname"
				used[t.Name] = true
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

// bannerConn records the server's identification line as the SSH library reads it.
type bannerConn struct {
	net.Conn
	mu   sync.Mutex
	buf  bytes.Buffer
	done bool
}

func (c *bannerConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	if !c.done && n > 0 {
		c.buf.Write(p[:n])
		if bytes.Contains(c.buf.Bytes(), []byte("\n")) || c.buf.Len() > 512 {
			c.done = true
		}
	}
	c.mu.Unlock()
	return n, err
}

func (c *bannerConn) banner() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, line := range strings.Split(c.buf.String(), "\n") {
		if strings.HasPrefix(line, "SSH-") {
			return strings.TrimSpace(line)
		}
	}
	return ""
}

const probeScript = `hostname
if [ -e /etc/NIXOS ] || [ -e /run/current-system/nixos-version ]; then echo nixos=yes; else echo nixos=no; fi
echo "version=$(cat /run/current-system/nixos-version 2>/dev/null)"
echo "profile=$(readlink /nix/var/nix/profiles/system 2>/dev/null)"
`

// inspectHost reads the banner and host key, and logs in when our keys are
// accepted. It never sends a password, never forwards the agent, and never
// writes to known_hosts; with a changed host key it does not log in.
func inspectHost(ctx context.Context, h *Host, o Options) {
	if o.Resolver != nil {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		if names, err := o.Resolver.LookupAddr(rctx, h.Address); err == nil && len(names) > 0 {
			h.ReverseDNS = strings.TrimSuffix(names[0], ".")
		}
		cancel()
	}
	hp := net.JoinHostPort(h.Address, strconv.Itoa(o.Port))
	d := net.Dialer{Timeout: 3 * time.Second}
	raw, err := d.DialContext(ctx, "tcp", hp)
	if err != nil {
		h.AuthError = "connection failed: " + err.Error()
		return
	}
	conn := &bannerConn{Conn: raw}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))

	var files []string
	for _, f := range o.KnownHosts {
		if _, err := os.Stat(f); err == nil {
			files = append(files, f)
		}
	}
	db, dbErr := knownhosts.NewDB(files...)
	algos := []string{ssh.KeyAlgoED25519, ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521, ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256}
	if dbErr == nil {
		if known := db.HostKeyAlgorithms(hp); len(known) > 0 {
			algos = known
		}
	}
	// No usable key still leaves the banner and the host key to report.
	auth, closeAgent, _ := sshx.AuthMethods(o.Identities, len(o.Identities) > 0)
	defer closeAgent()
	cfg := &ssh.ClientConfig{
		User: o.User,
		Auth: auth,
		HostKeyCallback: func(hostname string, remote net.Addr, key ssh.PublicKey) error {
			h.Fingerprint = ssh.FingerprintSHA256(key)
			if dbErr != nil {
				h.KeyStatus = KeyUnknown
				return nil
			}
			err := db.HostKeyCallback()(hostname, remote, key)
			switch {
			case err == nil:
				h.KeyStatus = KeyKnown
			case knownhosts.IsHostKeyChanged(err):
				h.KeyStatus = KeyChanged
				return err // possibly not the machine we think: do not log in
			default:
				h.KeyStatus = KeyUnknown
			}
			return nil
		},
		HostKeyAlgorithms: algos,
		Timeout:           5 * time.Second,
	}
	sconn, chans, reqs, err := ssh.NewClientConn(conn, hp, cfg)
	h.SSHVersion = conn.banner()
	if err != nil {
		if h.KeyStatus == KeyChanged {
			h.AuthError = "host key changed: not logged in"
		} else if h.Fingerprint != "" {
			h.AuthError = "our keys were not accepted for " + o.User
		} else {
			h.AuthError = "SSH handshake failed: " + err.Error()
		}
		return
	}
	client := ssh.NewClient(sconn, chans, reqs)
	defer client.Close()
	sess, err := client.NewSession()
	if err != nil {
		return
	}
	defer sess.Close()
	out, err := sess.Output(probeScript)
	if err != nil && len(out) == 0 {
		h.AuthError = "logged in, but the probe failed: " + err.Error()
		return
	}
	h.LoggedIn = true
	lines := strings.Split(string(out), "\n")
	if len(lines) > 0 {
		h.Hostname = strings.TrimSpace(lines[0])
	}
	for _, l := range lines[1:] {
		k, v, _ := strings.Cut(l, "=")
		switch k {
		case "nixos":
			h.NixOS = v == "yes"
		case "version":
			h.Version = strings.TrimSpace(v)
		case "profile":
			h.Generation = nix.GenerationOf(v)
		}
	}
}
