// Package sshx connects to targets with golang.org/x/crypto/ssh: host keys
// are always verified against known_hosts (github.com/skeema/knownhosts, which
// also picks the host key algorithms known_hosts can verify), ~/.ssh/config
// is honoured (ProxyJump through the same client), connect and handshake are
// bounded by a timeout, keepalives detect a dead peer, every command's
// output and time are bounded, and every failure is turned into an error
// that names its cause and remedy. Nothing is ever written under ~/.ssh.
package sshx

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/skeema/knownhosts"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// Client is one SSH connection to a target (through its jump hosts).
type Client struct {
	cfg    Config
	client *ssh.Client
	hops   []*ssh.Client // jump hosts, outermost first
	// HostKeyFingerprint is the SHA256 fingerprint the target presented.
	HostKeyFingerprint string

	mu      sync.Mutex
	dead    error // why the connection was declared dead (keepalive)
	closed  bool
	stopKA  chan struct{}
	kaDone  chan struct{}
	onClose []func()
	// sessions open on the connection (started, not yet waited for or
	// closed): only while others are open may a refused one free up.
	sessions atomic.Int32
}

// Config returns the resolved settings of the connection.
func (c *Client) Config() Config { return c.cfg }

// Dial connects to cfg's host through its jump hosts, verifying every
// host key, and starts keepalives.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Port == 0 {
		cfg.Port = 22
	}
	if cfg.HostName == "" {
		cfg.HostName = cfg.Host
	}
	if cfg.Host == "" {
		cfg.Host = cfg.HostName
	}
	if cfg.Keepalive.DeadAfter <= 0 {
		cfg.Keepalive.DeadAfter = DefaultDeadAfter
	}
	if cfg.Keepalive.Interval <= 0 {
		cfg.Keepalive.Interval = IntervalFor(cfg.Keepalive.DeadAfter)
	}
	if len(cfg.KnownHosts) == 0 {
		cfg.KnownHosts = []string{DefaultKnownHosts()}
	}
	c := &Client{cfg: cfg}
	var via *ssh.Client
	for i, hop := range cfg.Jumps {
		if hop.Timeout <= 0 {
			hop.Timeout = cfg.Timeout
		}
		if hop.Port == 0 {
			hop.Port = 22
		}
		if hop.HostName == "" {
			hop.HostName = hop.Host
		}
		if len(hop.KnownHosts) == 0 {
			hop.KnownHosts = cfg.KnownHosts
		}
		if i == 0 {
			hop.Dialer = cfg.Dialer
		}
		hc, _, err := dialHop(ctx, hop, via)
		if err != nil {
			c.closeHops()
			var se *Error
			if errors.As(err, &se) {
				se.Cause = "jump host " + hop.Host + ": " + se.Cause
				se.Jump = hop.Host
			}
			return nil, err
		}
		c.hops = append(c.hops, hc)
		via = hc
	}
	sc, fp, err := dialHop(ctx, cfg, via)
	if err != nil {
		c.closeHops()
		return nil, err
	}
	c.client, c.HostKeyFingerprint = sc, fp
	c.startKeepalive()
	return c, nil
}

// dialHop opens one SSH connection, directly or through via.
func dialHop(ctx context.Context, cfg Config, via *ssh.Client) (*ssh.Client, string, error) {
	var files []string
	for _, f := range cfg.KnownHosts {
		if _, err := os.Stat(f); err == nil {
			files = append(files, f)
		}
	}
	db, err := knownhosts.NewDB(files...)
	if err != nil {
		return nil, "", &Error{Kind: KindOther, Address: cfg.Host, Err: err,
			Cause: fmt.Sprintf("reading known_hosts %s: %v", strings.Join(files, ", "), err), Remedy: "fix or remove the malformed line"}
	}
	auth, closeAgent, err := AuthMethods(cfg.Identities, cfg.IdentitiesOnly)
	if err != nil {
		return nil, "", &Error{Kind: KindAuth, Address: cfg.Host, Err: err, Cause: err.Error()}
	}
	defer closeAgent()

	khName := cfg.knownHostsName()
	algos := db.HostKeyAlgorithms(khName)
	if len(algos) == 0 {
		// Unknown host: ask for the ed25519 key first, the one the remedy
		// (ssh-keyscan -t ed25519) and the console check name.
		algos = []string{ssh.KeyAlgoED25519, ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521, ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256}
	}
	var presented ssh.PublicKey
	var mu sync.Mutex
	check := db.HostKeyCallback()
	sshCfg := &ssh.ClientConfig{
		User: cfg.User,
		Auth: auth,
		HostKeyCallback: func(_ string, remote net.Addr, key ssh.PublicKey) error {
			mu.Lock()
			presented = key
			mu.Unlock()
			// Looked up under HostName:Port (or HostKeyAlias), as OpenSSH does.
			return check(khName, remote, key)
		},
		// Offer only algorithms known_hosts can verify for this host, so a
		// server that also has an RSA key is not mistaken for a changed key.
		HostKeyAlgorithms: algos,
		Timeout:           cfg.Timeout,
	}

	hp := cfg.hostPort()
	dctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	var conn net.Conn
	if via != nil {
		conn, err = via.DialContext(dctx, "tcp", hp)
		if err != nil {
			return nil, "", classifyJumpDial(cfg, err, ctx.Err())
		}
	} else {
		dial := cfg.Dialer
		if dial == nil {
			d := &net.Dialer{}
			dial = d.DialContext
		}
		conn, err = dial(dctx, "tcp", hp)
		if err != nil {
			return nil, "", classifyDial(cfg, err, ctx.Err())
		}
	}
	// ClientConfig.Timeout covers only the TCP connect: bound the handshake
	// (channels of a jump host have no deadlines, so close on expiry).
	var expired sync.Once
	timedOut := false
	timer := time.AfterFunc(cfg.Timeout, func() {
		expired.Do(func() { timedOut = true })
		conn.Close()
	})
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	sconn, chans, reqs, err := ssh.NewClientConn(conn, hp, sshCfg)
	timer.Stop()
	stop()
	expired.Do(func() {})
	if err != nil {
		conn.Close()
		mu.Lock()
		key := presented
		mu.Unlock()
		if timedOut {
			err = fmt.Errorf("%w: %w", os.ErrDeadlineExceeded, err)
		}
		return nil, "", classifyHandshake(cfg, err, key, ctx.Err(), db)
	}
	fp := ""
	if presented != nil {
		fp = ssh.FingerprintSHA256(presented)
	}
	return ssh.NewClient(sconn, chans, reqs), fp, nil
}

// AuthMethods returns public key authentication only: the identity files
// (default ~/.ssh/id_{ed25519,ecdsa,rsa}) and, unless identitiesOnly, the
// SSH agent. It never offers a password, and the agent is never forwarded.
// With identitiesOnly a missing or unreadable identity is an error. The
// returned function closes the agent connection.
func AuthMethods(identities []string, identitiesOnly bool) ([]ssh.AuthMethod, func(), error) {
	noop := func() {}
	var signers []ssh.Signer
	strict := identitiesOnly && len(identities) > 0
	if len(identities) == 0 {
		home, _ := os.UserHomeDir()
		for _, n := range []string{"id_ed25519", "id_ecdsa", "id_rsa"} {
			identities = append(identities, filepath.Join(home, ".ssh", n))
		}
	}
	for _, f := range identities {
		data, err := os.ReadFile(f)
		if err != nil {
			if strict {
				return nil, noop, fmt.Errorf("reading SSH key %s: %w", f, err)
			}
			continue
		}
		s, err := ssh.ParsePrivateKey(data)
		if err != nil {
			var pp *ssh.PassphraseMissingError
			if errors.As(err, &pp) {
				// Encrypted keys are used through the agent.
				continue
			}
			if strict {
				return nil, noop, fmt.Errorf("SSH key %s: %w", f, err)
			}
			continue
		}
		signers = append(signers, s)
	}
	var methods []ssh.AuthMethod
	closeAgent := noop
	if !identitiesOnly {
		if sock := os.Getenv("SSH_AUTH_SOCK"); sock != "" {
			if c, err := net.Dial("unix", sock); err == nil {
				closeAgent = func() { c.Close() }
				methods = append(methods, ssh.PublicKeysCallback(agent.NewClient(c).Signers))
			}
		}
	}
	if len(signers) > 0 {
		methods = append(methods, ssh.PublicKeys(signers...))
	}
	if len(methods) == 0 {
		return nil, noop, errors.New("no SSH key: start ssh-agent with your key loaded, or create one with `ssh-keygen -t ed25519` and add its .pub to the target's authorized keys")
	}
	return methods, closeAgent, nil
}

// startKeepalive sends keepalive@openssh.com every Interval; when no reply
// arrives within DeadAfter the connection is closed, so that every session
// on it fails at once with a dead-peer error instead of hanging.
func (c *Client) startKeepalive() {
	c.stopKA = make(chan struct{})
	c.kaDone = make(chan struct{})
	ka := c.cfg.Keepalive
	go func() {
		defer close(c.kaDone)
		tick := time.NewTicker(ka.Interval)
		defer tick.Stop()
		lastReply := time.Now()
		replies := make(chan struct{}, 1)
		inFlight := false
		for {
			select {
			case <-c.stopKA:
				return
			case <-replies:
				inFlight = false
				lastReply = time.Now()
			case <-tick.C:
				// Dead: a keepalive is unanswered and nothing came back for
				// DeadAfter (so at most DeadAfter plus one interval after
				// the peer stopped; a live peer answering every keepalive
				// is never dead, whatever the two durations).
				if silent := time.Since(lastReply); inFlight && silent >= ka.DeadAfter {
					c.declareDead(silent)
					return
				}
				if !inFlight {
					inFlight = true
					go func() {
						// Any reply (OpenSSH answers "failure") proves the peer lives.
						_, _, err := c.client.SendRequest("keepalive@openssh.com", true, nil)
						if err == nil {
							select {
							case replies <- struct{}{}:
							default:
							}
						}
					}()
				}
			}
		}
	}()
}

func (c *Client) declareDead(silent time.Duration) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.dead = &Error{Kind: KindDeadPeer, Address: c.cfg.Host,
		Cause:  fmt.Sprintf("%s stopped answering (no SSH keepalive reply for %v)", c.cfg.Host, silent.Round(time.Second)),
		Remedy: "the link or the machine went down: check its network and power, then run again"}
	c.mu.Unlock()
	c.client.Close()
	c.closeHops()
}

// Dead returns the reason the connection was declared dead, or nil.
func (c *Client) Dead() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dead
}

// OnClose registers f to run when the client is closed.
func (c *Client) OnClose(f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.onClose = append(c.onClose, f)
}

func (c *Client) closeHops() {
	for i := len(c.hops) - 1; i >= 0; i-- {
		c.hops[i].Close()
	}
}

// Close closes the connection and its jump hosts.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	fs := c.onClose
	c.onClose = nil
	c.mu.Unlock()
	for _, f := range fs {
		f()
	}
	if c.stopKA != nil {
		close(c.stopKA)
	}
	err := c.client.Close()
	c.closeHops()
	return err
}
