// Package sshx connects to targets with golang.org/x/crypto/ssh: host keys
// are always verified against known_hosts (github.com/skeema/knownhosts, which
// also picks the host key algorithms known_hosts can verify), the connection
// and the handshake are bounded by a timeout, and every failure is turned
// into an error that names its cause and remedy.
package sshx

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/skeema/knownhosts"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// Config says how to reach one target.
type Config struct {
	Address string // IP address or host name
	Port    int    // default 22
	User    string
	// KnownHosts files; default ~/.ssh/known_hosts.
	KnownHosts []string
	// Identities are private key files. When empty: the SSH agent (if
	// SSH_AUTH_SOCK is set) and ~/.ssh/id_ed25519, id_ecdsa, id_rsa.
	Identities []string
	// Timeout bounds the TCP connect and the SSH handshake; default 10s.
	Timeout time.Duration
	// Dialer opens the TCP connection; default net.Dialer.
	Dialer func(ctx context.Context, network, addr string) (net.Conn, error)
}

func (c Config) hostPort() string {
	port := c.Port
	if port == 0 {
		port = 22
	}
	return net.JoinHostPort(c.Address, strconv.Itoa(port))
}

// DefaultKnownHosts is ~/.ssh/known_hosts.
func DefaultKnownHosts() string {
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".ssh", "known_hosts")
}

// Client is an SSH connection to a target.
type Client struct {
	cfg    Config
	client *ssh.Client
	// HostKeyFingerprint is the SHA256 fingerprint the server presented.
	HostKeyFingerprint string
}

// Dial connects and authenticates.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	if len(cfg.KnownHosts) == 0 {
		cfg.KnownHosts = []string{DefaultKnownHosts()}
	}
	var files []string
	for _, f := range cfg.KnownHosts {
		if _, err := os.Stat(f); err == nil {
			files = append(files, f)
		}
	}
	db, err := knownhosts.NewDB(files...)
	if err != nil {
		return nil, fmt.Errorf("reading known_hosts %s: %w", strings.Join(files, ", "), err)
	}
	auth, closeAgent, err := AuthMethods(cfg.Identities)
	if err != nil {
		return nil, err
	}
	defer closeAgent()

	hp := cfg.hostPort()
	algos := db.HostKeyAlgorithms(hp)
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
		HostKeyCallback: func(hostname string, remote net.Addr, key ssh.PublicKey) error {
			mu.Lock()
			presented = key
			mu.Unlock()
			return check(hostname, remote, key)
		},
		// Offer only algorithms known_hosts can verify for this host, so a
		// server that also has an RSA key is not mistaken for a changed key.
		HostKeyAlgorithms: algos,
		Timeout:           cfg.Timeout,
	}

	dctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	dial := cfg.Dialer
	if dial == nil {
		d := &net.Dialer{}
		dial = d.DialContext
	}
	conn, err := dial(dctx, "tcp", hp)
	if err != nil {
		return nil, classifyDial(cfg, err, ctx.Err())
	}
	// ClientConfig.Timeout covers only the TCP connect: bound the handshake.
	_ = conn.SetDeadline(time.Now().Add(cfg.Timeout))
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	sconn, chans, reqs, err := ssh.NewClientConn(conn, hp, sshCfg)
	stop()
	if err != nil {
		conn.Close()
		mu.Lock()
		key := presented
		mu.Unlock()
		return nil, classifyHandshake(cfg, err, key, ctx.Err())
	}
	_ = conn.SetDeadline(time.Time{})
	c := &Client{cfg: cfg, client: ssh.NewClient(sconn, chans, reqs)}
	if presented != nil {
		c.HostKeyFingerprint = ssh.FingerprintSHA256(presented)
	}
	return c, nil
}

// AuthMethods returns public key authentication only: explicit identity
// files, or the SSH agent plus ~/.ssh/id_{ed25519,ecdsa,rsa}. It never
// offers a password, and the agent is never forwarded. The function closes
// the agent connection.
func AuthMethods(identities []string) ([]ssh.AuthMethod, func(), error) {
	noop := func() {}
	var signers []ssh.Signer
	explicit := len(identities) > 0
	if !explicit {
		home, _ := os.UserHomeDir()
		for _, n := range []string{"id_ed25519", "id_ecdsa", "id_rsa"} {
			identities = append(identities, filepath.Join(home, ".ssh", n))
		}
	}
	for _, f := range identities {
		data, err := os.ReadFile(f)
		if err != nil {
			if explicit {
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
			if explicit {
				return nil, noop, fmt.Errorf("SSH key %s: %w", f, err)
			}
			continue
		}
		signers = append(signers, s)
	}
	var methods []ssh.AuthMethod
	closeAgent := noop
	if !explicit {
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

// Close closes the connection.
func (c *Client) Close() error { return c.client.Close() }

// Output of a remote command.
type Output struct {
	Stdout, Stderr string
	Code           int
}

// ExitError is a remote command that exited non-zero.
type ExitError struct {
	Command string
	Output
}

func (e *ExitError) Error() string {
	msg := strings.TrimSpace(e.Stderr)
	if msg == "" {
		msg = strings.TrimSpace(e.Stdout)
	}
	return fmt.Sprintf("remote command exited with status %d: %s", e.Code, lastLines(msg, 3))
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// Run runs a shell command (already quoted) on the target. A non-zero exit
// is an *ExitError carrying the output. Cancelling ctx closes the session
// (sshd ignores signals sent over the channel, so closing is the only
// reliable way to stop remote work).
func (c *Client) Run(ctx context.Context, command string, stdin io.Reader) (Output, error) {
	sess, err := c.client.NewSession()
	if err != nil {
		return Output{}, fmt.Errorf("opening an SSH session to %s: %w", c.cfg.Address, err)
	}
	defer sess.Close()
	var so, se bytes.Buffer
	sess.Stdout, sess.Stderr = &so, &se
	if stdin != nil {
		sess.Stdin = stdin
	}
	done := make(chan error, 1)
	go func() { done <- sess.Run(command) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		sess.Close()
		return Output{Stdout: so.String(), Stderr: se.String(), Code: -1}, fmt.Errorf("interrupted: %w", ctx.Err())
	}
	out := Output{Stdout: so.String(), Stderr: se.String()}
	if err == nil {
		return out, nil
	}
	var ee *ssh.ExitError
	if errors.As(err, &ee) {
		out.Code = ee.ExitStatus()
		return out, &ExitError{Command: command, Output: out}
	}
	var missing *ssh.ExitMissingError
	if errors.As(err, &missing) {
		out.Code = -1
		return out, fmt.Errorf("the SSH connection to %s was lost while running a command", c.cfg.Address)
	}
	return out, fmt.Errorf("running a command on %s: %w", c.cfg.Address, err)
}

// RunStream runs a command with caller-provided streams and returns when it
// exits (an *ExitError for a non-zero status). Cancelling ctx closes the session.
func (c *Client) RunStream(ctx context.Context, command string, stdin io.Reader, stdout, stderr io.Writer) error {
	sess, err := c.client.NewSession()
	if err != nil {
		return fmt.Errorf("opening an SSH session to %s: %w", c.cfg.Address, err)
	}
	defer sess.Close()
	sess.Stdin, sess.Stdout, sess.Stderr = stdin, stdout, stderr
	done := make(chan error, 1)
	go func() { done <- sess.Run(command) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		sess.Close()
		return fmt.Errorf("interrupted: %w", ctx.Err())
	}
	if err == nil {
		return nil
	}
	var ee *ssh.ExitError
	if errors.As(err, &ee) {
		return &ExitError{Command: command, Output: Output{Code: ee.ExitStatus()}}
	}
	return fmt.Errorf("running a command on %s: %w", c.cfg.Address, err)
}
