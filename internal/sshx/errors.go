package sshx

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"

	"github.com/skeema/knownhosts"
	"golang.org/x/crypto/ssh"
)

// Kind classifies connection failures.
type Kind string

// Failure kinds, each with its own message and remedy.
const (
	KindDNS         Kind = "dns"
	KindRefused     Kind = "refused"
	KindTimeout     Kind = "timeout"
	KindUnreachable Kind = "unreachable"
	KindUnknownHost Kind = "unknown-host-key"
	KindChangedHost Kind = "changed-host-key"
	KindAuth        Kind = "auth"
	KindHandshake   Kind = "handshake"
	KindInterrupted Kind = "interrupted"
	KindKeyType     Kind = "host-key-type"
	KindDeadPeer    Kind = "dead-peer"
	KindLost        Kind = "connection-lost"
	KindTooMuch     Kind = "output-limit"
	KindSlow        Kind = "command-timeout"
	KindOther       Kind = "other"
)

// Error is a failed connection: what happened and what to do.
type Error struct {
	Kind        Kind
	Address     string
	Jump        string // the jump host that failed, if it was one
	Fingerprint string // for host key problems
	Cause       string
	Remedy      string
	Err         error
}

func (e *Error) Error() string {
	if e.Remedy == "" {
		return e.Cause
	}
	return e.Cause + ": " + e.Remedy
}

func (e *Error) Unwrap() error { return e.Err }

// classifyJumpDial classifies a failure of a jump host to open the next hop.
func classifyJumpDial(cfg Config, err, ctxErr error) error {
	hp := cfg.hostPort()
	if ctxErr != nil {
		return &Error{Kind: KindInterrupted, Address: cfg.Host, Err: err, Cause: "interrupted while connecting"}
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "Connection refused"):
		return &Error{Kind: KindRefused, Address: cfg.Host, Err: err, Cause: fmt.Sprintf("connection refused by %s (seen from the jump host)", hp),
			Remedy: "sshd is not running or listens elsewhere: check services.openssh on the target (console access needed)"}
	case strings.Contains(msg, "administratively prohibited"):
		return &Error{Kind: KindOther, Address: cfg.Host, Err: err, Cause: fmt.Sprintf("the jump host refuses to forward to %s", hp),
			Remedy: "allow TCP forwarding on the jump host (AllowTcpForwarding in its sshd_config)"}
	case isTimeout(err):
		return &Error{Kind: KindTimeout, Address: cfg.Host, Err: err, Cause: fmt.Sprintf("no answer from %s within %v (through the jump host)", hp, cfg.Timeout),
			Remedy: "the machine is off or unreachable from the jump host"}
	}
	return &Error{Kind: KindUnreachable, Address: cfg.Host, Err: err, Cause: fmt.Sprintf("the jump host cannot reach %s: %v", hp, err),
		Remedy: "check the target's address (HostName in ~/.ssh/config) and that it is up"}
}

func classifyDial(cfg Config, err, ctxErr error) error {
	hp := cfg.hostPort()
	var dnsErr *net.DNSError
	switch {
	case ctxErr != nil:
		return &Error{Kind: KindInterrupted, Address: cfg.Host, Err: err, Cause: "interrupted while connecting"}
	case errors.As(err, &dnsErr):
		return &Error{Kind: KindDNS, Address: cfg.Host, Err: err,
			Cause:  fmt.Sprintf("cannot resolve %s (%s)", cfg.Host, dnsReason(dnsErr)),
			Remedy: "check the address in target.json or on the command line, or use the machine's IP address"}
	case errors.Is(err, syscall.ECONNREFUSED):
		return &Error{Kind: KindRefused, Address: cfg.Host, Err: err,
			Cause:  fmt.Sprintf("connection refused by %s", hp),
			Remedy: "sshd is not running or listens elsewhere: check services.openssh on the target (console access needed)"}
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return &Error{Kind: KindUnreachable, Address: cfg.Host, Err: err,
			Cause:  fmt.Sprintf("no route to %s", hp),
			Remedy: "the machine is off or not on this network: check its power, cable and address"}
	case isTimeout(err):
		return &Error{Kind: KindTimeout, Address: cfg.Host, Err: err,
			Cause:  fmt.Sprintf("no answer from %s within %v", hp, cfg.Timeout),
			Remedy: "the machine is off, unreachable, or a firewall drops SSH: check that it is up and that port 22 is open"}
	}
	return &Error{Kind: KindOther, Address: cfg.Host, Err: err, Cause: fmt.Sprintf("connecting to %s: %v", hp, err),
		Remedy: "check the address and the network"}
}

func dnsReason(e *net.DNSError) string {
	switch {
	case e.IsNotFound:
		return "no such host"
	case e.IsTimeout:
		return "DNS server did not answer"
	}
	return e.Err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func classifyHandshake(cfg Config, err error, key ssh.PublicKey, ctxErr error, db *knownhosts.HostKeyDB) error {
	hp := cfg.hostPort()
	fp := ""
	if key != nil {
		fp = ssh.FingerprintSHA256(key)
	}
	kh := strings.Join(cfg.KnownHosts, ", ")
	name, scan := cfg.knownHostsDisplay()
	switch {
	case ctxErr != nil:
		return &Error{Kind: KindInterrupted, Address: cfg.Host, Err: err, Cause: "interrupted while connecting"}
	case knownhosts.IsHostKeyChanged(err):
		return &Error{Kind: KindChangedHost, Address: cfg.Host, Fingerprint: fp, Err: err,
			Cause:  fmt.Sprintf("HOST KEY OF %s HAS CHANGED (it now presents %s, which does not match %s)", cfg.Host, fp, kh),
			Remedy: fmt.Sprintf("this could be a man-in-the-middle attack; if the machine was reinstalled, verify the new key on its console (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), then run `ssh-keygen -R %s -f %s` and accept the new key", shellWord(name), cfg.KnownHosts[0])}
	case knownhosts.IsHostUnknown(err):
		return &Error{Kind: KindUnknownHost, Address: cfg.Host, Fingerprint: fp, Err: err,
			Cause:  fmt.Sprintf("host key of %s is not in %s (it presents %s)", cfg.Host, kh, fp),
			Remedy: fmt.Sprintf("verify the fingerprint on the machine's console (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), then accept it with `%s >> %s`", scan, cfg.KnownHosts[0])}
	case strings.Contains(err.Error(), "no common algorithm for host key"):
		known := db.HostKeyAlgorithms(cfg.knownHostsName())
		return &Error{Kind: KindKeyType, Address: cfg.Host, Err: err,
			Cause: fmt.Sprintf("%s offers no host key of the type %s has for it (%s): the machine was reinstalled, its keys replaced, or it is not the machine you think",
				hp, kh, strings.Join(known, ", ")),
			Remedy: fmt.Sprintf("verify the machine's keys on its console (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub); if it is the right machine, replace its line: `ssh-keygen -R %s -f %s`, then `%s >> %s`", shellWord(name), cfg.KnownHosts[0], scan, cfg.KnownHosts[0])}
	case strings.Contains(err.Error(), "unable to authenticate") || strings.Contains(err.Error(), "no supported methods remain"):
		return &Error{Kind: KindAuth, Address: cfg.Host, Err: err,
			Cause:  fmt.Sprintf("%s@%s rejected our SSH keys", cfg.User, cfg.Host),
			Remedy: fmt.Sprintf("add your public key to users.users.%s.openssh.authorizedKeys.keys (targets/common/users.nix) and deploy it from a machine that can log in, or load the right key into ssh-agent", cfg.User)}
	case isTimeout(err) || errors.Is(err, os.ErrDeadlineExceeded):
		return &Error{Kind: KindTimeout, Address: cfg.Host, Err: err,
			Cause:  fmt.Sprintf("SSH handshake with %s did not finish within %v", hp, cfg.Timeout),
			Remedy: "the network is too slow or something else than sshd answers on that port"}
	}
	return &Error{Kind: KindHandshake, Address: cfg.Host, Err: err,
		Cause: fmt.Sprintf("SSH handshake with %s failed: %v", hp, err), Remedy: "check that sshd runs on that port"}
}

// knownHostsDisplay is the host's name in known_hosts ("host" or
// "[host]:port") and the ssh-keyscan command that fetches its key.
func (c Config) knownHostsDisplay() (string, string) {
	if c.HostKeyAlias != "" {
		return c.HostKeyAlias, fmt.Sprintf("ssh-keyscan -t ed25519 -p %d %s | sed 's/^[^ ]*/%s/'", c.Port, c.HostName, c.HostKeyAlias)
	}
	if c.Port == 0 || c.Port == 22 {
		return c.HostName, "ssh-keyscan -t ed25519 " + c.HostName
	}
	return fmt.Sprintf("[%s]:%d", c.HostName, c.Port), fmt.Sprintf("ssh-keyscan -t ed25519 -p %d %s", c.Port, c.HostName)
}

// shellWord quotes a known_hosts name for a command line when needed.
func shellWord(s string) string {
	if strings.ContainsAny(s, "[]:*?") {
		return "'" + s + "'"
	}
	return s
}
