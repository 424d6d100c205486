package sshx

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/kevinburke/ssh_config"
)

// Settings are what the caller knows about a connection before ssh_config
// is consulted. Non-zero fields win over ~/.ssh/config (flags and
// target.json come first, like OpenSSH's command line); zero fields are
// taken from ~/.ssh/config, then /etc/ssh/ssh_config, then the defaults.
type Settings struct {
	// Host is what the user names the machine by: the target's address (an
	// IP address or a host name). ssh_config's Host patterns match it, as
	// they match the host argument of ssh(1).
	Host string
	User string
	// DefaultUser applies when neither User nor ssh_config names one
	// (default: the local user, as with ssh).
	DefaultUser string
	Port        int
	KnownHosts  []string
	Identities  []string
	// Timeout bounds the TCP connect and the SSH handshake of each hop.
	Timeout time.Duration
	// Keepalive: interval of keepalive requests and how long a silent peer
	// may take before the connection is declared dead (DeadAfter).
	Keepalive Keepalive
	// ConfigFiles overrides the ssh_config files read (nil: ~/.ssh/config
	// and /etc/ssh/ssh_config; empty non-nil: none).
	ConfigFiles []string
}

// Keepalive configures keepalive@openssh.com requests.
type Keepalive struct {
	Interval  time.Duration // default: a third of DeadAfter (at least 1s)
	DeadAfter time.Duration // default 15s
}

// IntervalFor is the keepalive interval for a dead-peer time: a third of
// it, at least 1s (and never more than dead), so that a silent peer is
// declared dead at most an interval after dead has passed.
func IntervalFor(dead time.Duration) time.Duration {
	i := dead / 3
	if i < time.Second {
		i = min(time.Second, dead)
	}
	return i
}

// resolveKeepalive applies ssh_config to the caller's keepalive settings.
// A dead-peer time the caller gives (-deadpeer) wins, with its interval
// derived from it; otherwise ServerAliveInterval x ServerAliveCountMax
// (OpenSSH's default count: 3), otherwise DefaultDeadAfter.
func resolveKeepalive(sc *sshConfig, h string, ka Keepalive) Keepalive {
	if ka.DeadAfter <= 0 {
		interval, count := time.Duration(0), 0
		if v := sc.get(h, "ServerAliveInterval"); v != "" {
			if n, err := strconv.Atoi(v); err == nil && n > 0 {
				interval = time.Duration(n) * time.Second
			}
		}
		if v := sc.get(h, "ServerAliveCountMax"); v != "" {
			if n, err := strconv.Atoi(v); err == nil && n > 0 {
				count = n
			}
		}
		switch {
		case interval > 0:
			if count == 0 {
				count = 3
			}
			ka.DeadAfter = interval * time.Duration(count)
			if ka.Interval <= 0 {
				ka.Interval = interval
			}
		case count > 0:
			if ka.Interval <= 0 {
				ka.Interval = DefaultInterval
			}
			ka.DeadAfter = ka.Interval * time.Duration(count)
		default:
			ka.DeadAfter = DefaultDeadAfter
		}
	}
	if ka.Interval <= 0 {
		ka.Interval = IntervalFor(ka.DeadAfter)
	}
	if ka.Interval > ka.DeadAfter {
		ka.Interval = ka.DeadAfter
	}
	return ka
}

// Defaults of the connection settings.
const (
	DefaultTimeout   = 10 * time.Second
	DefaultDeadAfter = 15 * time.Second
	DefaultInterval  = DefaultDeadAfter / 3
	// maxJumps bounds ProxyJump chains (and loops through ssh_config).
	maxJumps = 8
)

// DefaultKnownHosts is ~/.ssh/known_hosts.
func DefaultKnownHosts() string {
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".ssh", "known_hosts")
}

// DefaultConfigFiles are the ssh_config files OpenSSH reads.
func DefaultConfigFiles() []string {
	home, _ := os.UserHomeDir()
	return []string{filepath.Join(home, ".ssh", "config"), "/etc/ssh/ssh_config"}
}

// sshConfig is the parsed ssh_config files, user file first.
type sshConfig struct {
	files []*ssh_config.Config
}

func loadSSHConfig(paths []string) (*sshConfig, error) {
	c := &sshConfig{}
	for _, p := range paths {
		f, err := os.Open(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", p, err)
		}
		cfg, err := ssh_config.Decode(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s cannot be read by this toolkit (%v): fix or move the unsupported lines (e.g. `Match exec`) to a file it does not read", p, err)
		}
		c.files = append(c.files, cfg)
	}
	return c, nil
}

// get returns the first value for key (OpenSSH: the first obtained value wins).
func (c *sshConfig) get(host, key string) string {
	for _, f := range c.files {
		if v, err := f.Get(host, key); err == nil && v != "" {
			return v
		}
	}
	return ""
}

// all returns every value for key across the files (IdentityFile accumulates).
func (c *sshConfig) all(host, key string) []string {
	var out []string
	for _, f := range c.files {
		if v, err := f.GetAll(host, key); err == nil {
			out = append(out, v...)
		}
	}
	return out
}

// Config is a resolved connection: everything needed to dial one target,
// through its jump hosts.
type Config struct {
	// Host as the user named it (for messages); HostName is dialled.
	Host     string
	HostName string
	Port     int
	User     string
	// HostKeyAlias replaces host:port when looking up known_hosts.
	HostKeyAlias   string
	KnownHosts     []string
	Identities     []string
	IdentitiesOnly bool
	Timeout        time.Duration
	Keepalive      Keepalive
	// Jumps are the hosts to pass through, in order (ProxyJump).
	Jumps []Config
	// Dialer opens the first TCP connection; default net.Dialer.
	Dialer func(ctx context.Context, network, addr string) (net.Conn, error)
}

func (c Config) hostPort() string {
	port := c.Port
	if port == 0 {
		port = 22
	}
	return net.JoinHostPort(c.HostName, strconv.Itoa(port))
}

// knownHostsName is what known_hosts is searched for: host or [host]:port.
func (c Config) knownHostsName() string {
	if c.HostKeyAlias != "" {
		return c.HostKeyAlias
	}
	return c.hostPort()
}

// Resolve applies ssh_config to s. Precedence: s's fields, then
// ~/.ssh/config, then /etc/ssh/ssh_config, then the defaults. Honoured
// keywords: HostName, Port, User, IdentityFile, IdentitiesOnly, ProxyJump,
// UserKnownHostsFile, GlobalKnownHostsFile, HostKeyAlias, ConnectTimeout,
// ServerAliveInterval and ServerAliveCountMax. StrictHostKeyChecking is
// always on whatever ssh_config says, and nothing is ever written.
func Resolve(s Settings) (Config, error) {
	files := s.ConfigFiles
	if files == nil {
		files = DefaultConfigFiles()
	}
	sc, err := loadSSHConfig(files)
	if err != nil {
		return Config{}, err
	}
	return resolve(sc, s, 0, map[string]bool{})
}

func resolve(sc *sshConfig, s Settings, depth int, seen map[string]bool) (Config, error) {
	if s.Host == "" {
		return Config{}, errors.New("no host to connect to")
	}
	if depth > maxJumps {
		return Config{}, fmt.Errorf("ProxyJump chain for %s is longer than %d hops (a loop in ssh_config?)", s.Host, maxJumps)
	}
	h := s.Host
	c := Config{Host: h, User: s.User, Port: s.Port, Timeout: s.Timeout, Keepalive: s.Keepalive}
	c.HostName = h
	if v := sc.get(h, "HostName"); v != "" {
		c.HostName = strings.ReplaceAll(v, "%h", h)
	}
	if c.Port == 0 {
		if v := sc.get(h, "Port"); v != "" {
			p, err := strconv.Atoi(v)
			if err != nil || p < 1 || p > 65535 {
				return c, fmt.Errorf("ssh_config: invalid Port %q for %s", v, h)
			}
			c.Port = p
		}
	}
	if c.Port == 0 {
		c.Port = 22
	}
	if c.User == "" {
		c.User = sc.get(h, "User")
	}
	if c.User == "" {
		c.User = s.DefaultUser
	}
	if c.User == "" {
		if u, err := user.Current(); err == nil {
			c.User = u.Username
		}
	}
	c.HostKeyAlias = sc.get(h, "HostKeyAlias")
	tokens := func(v string) string { return expand(v, c) }
	if len(s.KnownHosts) > 0 {
		c.KnownHosts = s.KnownHosts
	} else {
		for _, key := range []string{"UserKnownHostsFile", "GlobalKnownHostsFile"} {
			v := sc.get(h, key)
			if v == "" {
				continue
			}
			for _, f := range strings.Fields(v) {
				if f != "none" {
					c.KnownHosts = append(c.KnownHosts, tokens(f))
				}
			}
		}
		if sc.get(h, "UserKnownHostsFile") == "" {
			c.KnownHosts = append([]string{DefaultKnownHosts()}, c.KnownHosts...)
		}
		if sc.get(h, "GlobalKnownHostsFile") == "" {
			c.KnownHosts = append(c.KnownHosts, "/etc/ssh/ssh_known_hosts")
		}
	}
	if len(s.Identities) > 0 {
		c.Identities = s.Identities
		c.IdentitiesOnly = true
	} else {
		for _, f := range sc.all(h, "IdentityFile") {
			c.Identities = append(c.Identities, tokens(f))
		}
		c.IdentitiesOnly = strings.EqualFold(sc.get(h, "IdentitiesOnly"), "yes")
	}
	if c.Timeout == 0 {
		if v := sc.get(h, "ConnectTimeout"); v != "" {
			if n, err := strconv.Atoi(v); err == nil && n > 0 {
				c.Timeout = time.Duration(n) * time.Second
			}
		}
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	c.Keepalive = resolveKeepalive(sc, h, s.Keepalive)

	jump := sc.get(h, "ProxyJump")
	if jump == "" || strings.EqualFold(jump, "none") {
		return c, nil
	}
	key := c.User + "@" + c.hostPort()
	if seen[key] {
		return c, fmt.Errorf("ProxyJump loop in ssh_config at %s", h)
	}
	seen[key] = true
	for _, hop := range strings.Split(jump, ",") {
		hs, err := parseJump(strings.TrimSpace(hop))
		if err != nil {
			return c, fmt.Errorf("ssh_config: ProxyJump of %s: %w", h, err)
		}
		// A jump host is resolved through ssh_config like any host, with
		// the caller's timeout and keepalive, but its own user, keys and
		// known_hosts unless the caller forced them.
		hs.Timeout, hs.Keepalive, hs.KnownHosts, hs.DefaultUser = s.Timeout, s.Keepalive, s.KnownHosts, s.DefaultUser
		if len(s.Identities) > 0 {
			hs.Identities = s.Identities
		}
		jc, err := resolve(sc, hs, depth+1, seen)
		if err != nil {
			return c, err
		}
		// Its own jumps come first.
		c.Jumps = append(c.Jumps, jc.Jumps...)
		jc.Jumps = nil
		c.Jumps = append(c.Jumps, jc)
		if len(c.Jumps) > maxJumps {
			return c, fmt.Errorf("ProxyJump chain for %s is longer than %d hops", h, maxJumps)
		}
	}
	return c, nil
}

// parseJump reads [user@]host[:port] (an ssh:// URI is accepted too).
func parseJump(s string) (Settings, error) {
	s = strings.TrimPrefix(s, "ssh://")
	var hs Settings
	if s == "" {
		return hs, errors.New("empty jump host")
	}
	if u, rest, ok := strings.Cut(s, "@"); ok {
		hs.User, s = u, rest
	}
	host, port := s, ""
	if strings.HasPrefix(s, "[") {
		if i := strings.Index(s, "]"); i > 0 {
			host, port = s[1:i], strings.TrimPrefix(s[i+1:], ":")
		}
	} else if i := strings.LastIndex(s, ":"); i > 0 && strings.Count(s, ":") == 1 {
		host, port = s[:i], s[i+1:]
	}
	if port != "" {
		p, err := strconv.Atoi(port)
		if err != nil || p < 1 || p > 65535 {
			return hs, fmt.Errorf("invalid port in %q", s)
		}
		hs.Port = p
	}
	if host == "" || strings.ContainsAny(host, " /\\") {
		return hs, fmt.Errorf("invalid jump host %q", s)
	}
	hs.Host = host
	return hs, nil
}

// expand replaces ~ and the % tokens OpenSSH allows in file names.
func expand(v string, c Config) string {
	home, _ := os.UserHomeDir()
	if v == "~" {
		v = home
	} else if strings.HasPrefix(v, "~/") {
		v = filepath.Join(home, v[2:])
	}
	local := ""
	if u, err := user.Current(); err == nil {
		local = u.Username
	}
	r := strings.NewReplacer("%%", "%", "%d", home, "%h", c.HostName, "%n", c.Host, "%p", strconv.Itoa(c.Port), "%r", c.User, "%u", local)
	return r.Replace(v)
}
