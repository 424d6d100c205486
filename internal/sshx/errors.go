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
	KindOther       Kind = "other"
)

// Error is a failed connection: what happened and what to do.
type Error struct {
	Kind        Kind
	Address     string
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

func classifyDial(cfg Config, err, ctxErr error) error {
	hp := cfg.hostPort()
	var dnsErr *net.DNSError
	switch {
	case ctxErr != nil:
		return &Error{Kind: KindInterrupted, Address: cfg.Address, Err: err, Cause: "interrupted while connecting"}
	case errors.As(err, &dnsErr):
		return &Error{Kind: KindDNS, Address: cfg.Address, Err: err,
			Cause:  fmt.Sprintf("cannot resolve %s (%s)", cfg.Address, dnsReason(dnsErr)),
			Remedy: "check the address in target.json or on the command line, or use the machine's IP address"}
	case errors.Is(err, syscall.ECONNREFUSED):
		return &Error{Kind: KindRefused, Address: cfg.Address, Err: err,
			Cause:  fmt.Sprintf("connection refused by %s", hp),
			Remedy: "sshd is not running or listens elsewhere: check services.openssh on the target (console access needed)"}
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return &Error{Kind: KindUnreachable, Address: cfg.Address, Err: err,
			Cause:  fmt.Sprintf("no route to %s", hp),
			Remedy: "the machine is off or not on this network: check its power, cable and address"}
	case isTimeout(err):
		return &Error{Kind: KindTimeout, Address: cfg.Address, Err: err,
			Cause:  fmt.Sprintf("no answer from %s within %v", hp, cfg.Timeout),
			Remedy: "the machine is off, unreachable, or a firewall drops SSH: check that it is up and that port 22 is open"}
	}
	return &Error{Kind: KindOther, Address: cfg.Address, Err: err, Cause: fmt.Sprintf("connecting to %s: %v", hp, err),
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

func classifyHandshake(cfg Config, err error, key ssh.PublicKey, ctxErr error) error {
	hp := cfg.hostPort()
	fp := ""
	if key != nil {
		fp = ssh.FingerprintSHA256(key)
	}
	kh := strings.Join(cfg.KnownHosts, ", ")
	switch {
	case ctxErr != nil:
		return &Error{Kind: KindInterrupted, Address: cfg.Address, Err: err, Cause: "interrupted while connecting"}
	case knownhosts.IsHostKeyChanged(err):
		return &Error{Kind: KindChangedHost, Address: cfg.Address, Fingerprint: fp, Err: err,
			Cause:  fmt.Sprintf("HOST KEY OF %s HAS CHANGED (it now presents %s, which does not match %s)", cfg.Address, fp, kh),
			Remedy: fmt.Sprintf("this could be a man-in-the-middle attack; if the machine was reinstalled, verify the new key on its console (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), then run `ssh-keygen -R %s -f %s` and accept the new key", cfg.Address, cfg.KnownHosts[0])}
	case knownhosts.IsHostUnknown(err):
		return &Error{Kind: KindUnknownHost, Address: cfg.Address, Fingerprint: fp, Err: err,
			Cause:  fmt.Sprintf("host key of %s is not in %s (it presents %s)", cfg.Address, kh, fp),
			Remedy: fmt.Sprintf("verify the fingerprint on the machine's console (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), then accept it with `ssh-keyscan -t ed25519 %s >> %s`", cfg.Address, cfg.KnownHosts[0])}
	case strings.Contains(err.Error(), "unable to authenticate") || strings.Contains(err.Error(), "no supported methods remain"):
		return &Error{Kind: KindAuth, Address: cfg.Address, Err: err,
			Cause:  fmt.Sprintf("%s@%s rejected our SSH keys", cfg.User, cfg.Address),
			Remedy: fmt.Sprintf("add your public key to users.users.%s.openssh.authorizedKeys.keys (targets/common/users.nix) and deploy it from a machine that can log in, or load the right key into ssh-agent", cfg.User)}
	case isTimeout(err) || errors.Is(err, os.ErrDeadlineExceeded):
		return &Error{Kind: KindTimeout, Address: cfg.Address, Err: err,
			Cause:  fmt.Sprintf("SSH handshake with %s did not finish within %v", hp, cfg.Timeout),
			Remedy: "the network is too slow or something else than sshd answers on that port"}
	}
	return &Error{Kind: KindHandshake, Address: cfg.Address, Err: err,
		Cause: fmt.Sprintf("SSH handshake with %s failed: %v", hp, err), Remedy: "check that sshd runs on that port"}
}
