package deploy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"time"

	"github.com/monibahmed/nixos-config/internal/inventory"
	"github.com/monibahmed/nixos-config/internal/sshx"
	"github.com/monibahmed/nixos-config/internal/target"
	"github.com/monibahmed/nixos-config/internal/trouble"
)

// Connector opens connections to targets.
type Connector interface {
	Connect(ctx context.Context, t inventory.Target) (target.Conn, error)
}

// SSHConnector connects with golang.org/x/crypto/ssh, honouring
// ~/.ssh/config. Its fields, when set, win over ssh_config (they come from
// flags or the lab); the target's user and port win when target.json (or a
// flag) sets them.
type SSHConnector struct {
	KnownHosts []string
	Identities []string
	Timeout    time.Duration
	Keepalive  sshx.Keepalive
	// ConfigFiles overrides the ssh_config files (nil: the defaults).
	ConfigFiles []string
}

// NewSSHConnector is the connector of a run: the connect timeout and
// dead-peer time of the flags when given (zero otherwise, so that
// ~/.ssh/config's ConnectTimeout and ServerAlive*, then the defaults,
// apply), and the fleet's known_hosts and keys.
func NewSSHConnector(o Options, knownHosts, identities []string) SSHConnector {
	return SSHConnector{KnownHosts: knownHosts, Identities: identities, Timeout: o.ConnectTimeout,
		Keepalive: sshx.Keepalive{DeadAfter: o.DeadPeer}}
}

// Connect implements Connector.
func (c SSHConnector) Connect(ctx context.Context, t inventory.Target) (target.Conn, error) {
	cfg, err := c.Resolve(t)
	if err != nil {
		return nil, err
	}
	return sshx.Dial(ctx, cfg)
}

// Resolve returns the connection settings for t.
func (c SSHConnector) Resolve(t inventory.Target) (sshx.Config, error) {
	s := sshx.Settings{Host: t.Address, Port: t.Port, KnownHosts: c.KnownHosts, Identities: c.Identities,
		Timeout: c.Timeout, Keepalive: c.Keepalive, ConfigFiles: c.ConfigFiles, DefaultUser: inventory.DefaultUser}
	if t.UserSet {
		s.User = t.User
	}
	cfg, err := sshx.Resolve(s)
	if err != nil {
		return cfg, &sshx.Error{Kind: sshx.KindOther, Address: t.Address, Cause: err.Error(), Remedy: "fix ~/.ssh/config", Err: err}
	}
	return cfg, nil
}

// connect opens a connection to t (this machine for localhost).
func (d *Deployer) connect(ctx context.Context, t inventory.Target) (target.Conn, error) {
	if IsLocal(t.Address) {
		return sshx.Local{Runner: d.Runner}, nil
	}
	return d.Connector.Connect(ctx, t)
}

// Open opens a session on a new connection to t (for one-off commands
// such as mage hardware); a connection failure names cause and remedy.
func (d *Deployer) Open(ctx context.Context, t inventory.Target, o Options) (*target.Session, error) {
	if err := o.Normalize(); err != nil {
		return nil, err
	}
	s, err := d.session(ctx, t, o)
	if err != nil {
		f := connectFailure(err)
		f.Target, f.Stage = t.Name, "connect"
		return nil, f
	}
	return s, nil
}

// session opens a session on a new connection to t.
func (d *Deployer) session(ctx context.Context, t inventory.Target, o Options) (*target.Session, error) {
	conn, err := d.connect(ctx, t)
	if err != nil {
		return nil, err
	}
	return target.New(t.Name, userOf(conn, t), conn, d.Sudo, o.limits()), nil
}

// connectBound is how long opening a connection like conn may take: the
// resolved connect timeout of each of its hops (flag, else ssh_config's
// ConnectTimeout, else the default).
func connectBound(conn target.Conn, o Options) time.Duration {
	if c, ok := conn.(*sshx.Client); ok {
		cfg := c.Config()
		d := cfg.Timeout
		for _, h := range cfg.Jumps {
			d += max(h.Timeout, cfg.Timeout)
		}
		return d
	}
	if o.ConnectTimeout > 0 {
		return o.ConnectTimeout
	}
	return sshx.DefaultTimeout
}

// userOf is the user the connection logged in as.
func userOf(conn target.Conn, t inventory.Target) string {
	if c, ok := conn.(*sshx.Client); ok {
		return c.Config().User
	}
	if u, err := user.Current(); err == nil && IsLocal(t.Address) {
		return u.Username
	}
	return t.User
}

// preflight: connect, learn who the target is and what it can do, take the
// lock, and read the state every later decision is made from (under the
// lock, so that another deployer's work is never mistaken for ours).
func (j *job) preflight(ctx context.Context) *Failure {
	t, o := j.t, j.o
	sess, err := j.d.session(ctx, t, o)
	if err != nil {
		return connectFailure(err)
	}
	j.sess = sess
	facts, err := sess.ReadFacts(ctx)
	if err != nil {
		return targetFailure(err)
	}
	j.facts = facts
	if facts.Hostname != t.Name && facts.Hostname != "nixos" && !o.Force {
		return &Failure{Section: trouble.WrongMachine,
			Cause:  fmt.Sprintf("%s answers as %q, not %q", t.Address, facts.Hostname, t.Name),
			Remedy: "wrong address? check target.json or the address you gave; -force deploys anyway"}
	}
	if !facts.Nix {
		return &Failure{Section: trouble.TargetSetup, Cause: "nix is not installed on the target (no nix-env/nix-store in PATH for " + sess.User + ")",
			Remedy: "install NixOS on the target first (see docs/bootstrap.md)"}
	}
	if o.Offline && !facts.Lab {
		return &Failure{Section: trouble.TargetSetup,
			Cause:  "refusing to activate a test-double system (built offline) on a machine that is not a lab host",
			Remedy: "deploy real systems with Nix >= 2.18 and without -offline/-lab"}
	}
	if f := j.checkSudo(ctx); f != nil {
		return f
	}
	// The lock is taken while the build finishes and the copy asks what
	// the target lacks; the copy sends nothing before it is held
	// (lockTaken). The state and history are read under it while the copy
	// runs: only the activation needs them (awaitLock).
	lctx, cancel := context.WithCancel(ctx)
	j.locking, j.stopLocking, j.lockTaken = make(chan *Failure, 1), cancel, make(chan struct{})
	go func() { j.locking <- j.lockAndRead(lctx) }()
	return nil
}

// lockAndRead takes the target's deploy lock, then reads its state and
// history under it.
func (j *job) lockAndRead(ctx context.Context) *Failure {
	t, o, sess := j.t, j.o, j.sess
	lk, err := sess.Lock(ctx, target.LockInfo(Identity(), j.src.Commit, j.src.Dirty, ""), o.Wait, func(holder string) {
		j.d.Report.Note(t.Name, "waiting: "+t.Name+" is being deployed by "+holder)
	})
	if err != nil {
		f := lockFailure(err)
		if ctx.Err() != nil {
			f = interrupted(stoppedBeforeActivation, err)
		}
		f.Stage = StagePreflight
		return f
	}
	j.lock = lk
	close(j.lockTaken)
	if j.state, err = sess.ReadState(ctx); err != nil {
		f := targetFailure(err)
		f.Stage = StagePreflight
		return f
	}
	h, err := sess.ReadHistory(ctx)
	if err != nil {
		j.d.Report.Note(t.Name, "the history could not be read ("+errText(err)+"): this deployment is recorded anyway")
	}
	j.history = h
	return nil
}

// awaitLock waits until the target is locked and its state read (the
// stages that change the target call it first); the outcome is kept.
func (j *job) awaitLock() *Failure {
	if j.locking != nil {
		j.lockFailed = <-j.locking
		j.locking = nil
	}
	return j.lockFailed
}

// checkSudo asks for the password up front when the target needs one, and
// checks it (the password only ever reaches sudo's own prompt).
func (j *job) checkSudo(ctx context.Context) *Failure {
	switch j.facts.Sudo {
	case target.SudoMissing:
		if j.sess.User == "root" {
			return nil
		}
		return &Failure{Section: trouble.Sudo, Cause: "sudo is not available to " + j.sess.User + " on the target",
			Remedy: "enable it (security.sudo.enable = true) and put " + j.sess.User + " in wheel"}
	case target.SudoPassword:
		if _, err := j.d.Sudo.Password(ctx); err != nil {
			if errors.Is(err, target.ErrNoPrompt) {
				return &Failure{Section: trouble.Sudo, Cause: "sudo on the target needs a password and there is no terminal to ask for it",
					Remedy: "run from a terminal, or pipe the password on standard input with -asksudo, or give " + j.sess.User + " passwordless sudo (security.sudo.wheelNeedsPassword = false)"}
			}
			return &Failure{Section: trouble.Sudo, Cause: "no sudo password: " + err.Error(), Remedy: "run again and type the password"}
		}
	}
	if j.facts.Sudo == target.SudoOK {
		// `sudo -n true` worked: the lock, next, is the first root command.
		return nil
	}
	if _, err := j.sess.RunRoot(ctx, target.Root{Name: "sudo check", Args: []string{"true"}}); err != nil {
		return targetFailure(err)
	}
	return nil
}

// Identity is this deployer for locks and history: user@machine.
func Identity() string {
	u := "unknown"
	if cur, err := user.Current(); err == nil {
		u = cur.Username
	}
	h, _ := os.Hostname()
	if h == "" {
		h = "unknown"
	}
	return target.Clean(u+"@"+h, 120)
}

// connectFailure turns a connection error into a failure.
func connectFailure(err error) *Failure {
	var se *sshx.Error
	if errors.As(err, &se) {
		return &Failure{Cause: se.Cause, Remedy: se.Remedy, Section: target.SectionOf(se.Kind), Err: err}
	}
	return &Failure{Section: trouble.Network, Cause: err.Error(), Remedy: "check the address and that sshd runs on the target", Err: err}
}

// targetFailure turns a target package error into a failure.
func targetFailure(err error) *Failure {
	var te *target.Error
	if errors.As(err, &te) {
		return &Failure{Section: te.Section, Cause: te.Cause, Remedy: te.Remedy, Detail: te.Detail, Err: err}
	}
	var se *sshx.Error
	if errors.As(err, &se) {
		return connectFailure(err)
	}
	return &Failure{Section: trouble.TargetSetup, Cause: target.Clean(err.Error(), 300), Remedy: "check the target", Err: err}
}

func lockFailure(err error) *Failure {
	var le *target.LockedError
	if errors.As(err, &le) {
		remedy := "wait for it to finish, or run again with -wait"
		if le.Activation {
			remedy = "it finishes (or rolls back) by itself; run again with -wait to queue behind it"
		}
		return &Failure{Section: trouble.Locks, Cause: le.Error(), Remedy: remedy, Err: err}
	}
	return targetFailure(err)
}

func errText(err error) string {
	var te *target.Error
	if errors.As(err, &te) {
		return te.Cause
	}
	return target.Clean(err.Error(), 200)
}
