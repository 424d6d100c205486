// Package targettest is a scripted NixOS machine for in-process tests of
// the target and deploy packages: a connection that understands the
// commands those packages send (recognised by the names their scripts give
// themselves), emulates sudo's password exchange, and keeps a small state
// (generations, current system, history, locks, the activation unit).
package targettest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"

	"github.com/monibahmed/nixos-config/internal/sshx"
)

// Target is the fake machine. Set its fields before use; read them (with
// Lock) afterwards.
type Target struct {
	sync.Mutex
	Hostname string
	User     string // the SSH user ("root": no sudo)
	// SudoPassword: sudo asks for it ("" : passwordless). NoSudo: the
	// user may not use sudo.
	SudoPassword string
	NoSudo       bool
	Systemd      bool
	Generation   int
	Profile      string // the system profile's store path
	Current      string // /run/current-system
	FreeKB       int64
	History      []string
	// SwitchCode is switch-to-configuration's exit status for the next
	// deployment; RollbackCode for rollbacks.
	SwitchCode, RollbackCode int
	// OtherHolder, when set, holds the deploy lock until closed; OnFree
	// then runs (e.g. another deployer's generation appears).
	OtherHolder chan struct{}
	OnFree      func(*Target)
	// ReachFails makes the magic-rollback confirmation fail (the unit
	// already rolled back by itself).
	ReachFails bool
	// Health: exit status of health-check commands. OnHealth, when set,
	// runs (unlocked) as each health-check command starts.
	HealthCode int
	OnHealth   func()
	// LostAtSudo: the connection drops while sudo starts (its session
	// ends without an exit status).
	LostAtSudo bool
	// QueryStderr, when set, makes the query for missing paths fail with
	// this text on stderr after printing the free space (a daemon that
	// hangs up, as Nix 2.34's does on a full /nix).
	QueryStderr string

	// Recorded.
	Logins      int
	Log         []string // what ran, by name
	Passwords   []string // what reached sudo's prompt
	CommandIn   []string // input of root commands (never a password)
	Activations [][]string
	Verdicts    []string
	unit        unit
}

// unit is the state of the fake activation unit.
type unit struct {
	mode, path                string
	prevGen                   int
	prevPath, prevCurrent     string
	result, rollback, okLine  string
	failedLine, vanishedLine  string
	verdictLine               string
	reached, done, rolledBack bool
}

// Conn returns a new connection to the target (one login).
func (t *Target) Conn() *Conn {
	t.Lock()
	t.Logins++
	t.Unlock()
	return &Conn{t: t}
}

// Conn is one connection to the fake target; it implements target.Conn.
type Conn struct {
	t      *Target
	closed bool
}

// Close implements target.Conn.
func (c *Conn) Close() error { c.closed = true; return nil }

// Exec implements target.Conn.
func (c *Conn) Exec(ctx context.Context, cmd sshx.Command) (sshx.Output, error) {
	p, err := c.Start(ctx, cmd.Line)
	if err != nil {
		return sshx.Output{Code: -1}, err
	}
	return p.Run(ctx, cmd)
}

// Start implements target.Conn.
func (c *Conn) Start(ctx context.Context, line string) (*sshx.Proc, error) {
	if c.closed {
		return nil, errors.New("connection closed")
	}
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	errR, errW := io.Pipe()
	done := make(chan int, 1)
	go func() {
		code := c.t.run(line, bufio.NewReader(inR), outW, errW)
		outW.Close()
		errW.Close()
		inR.Close()
		done <- code
	}()
	var once sync.Once
	code := 0
	wait := func() error {
		once.Do(func() { code = <-done })
		if code == lostCode {
			return &sshx.Error{Kind: sshx.KindLost, Address: c.t.Hostname, Cause: "the SSH connection to " + c.t.Hostname + " was lost while running a command",
				Remedy: "check the network and that the target is up, then run again"}
		}
		if code != 0 {
			return &sshx.ExitError{Command: line, Output: sshx.Output{Code: code}}
		}
		return nil
	}
	kill := func() { inR.CloseWithError(errors.New("killed")); outR.Close(); errR.Close() }
	return sshx.NewProc("fake", inW, outR, errR, wait, kill), nil
}

// lostCode: the command's session ended with the connection.
const lostCode = -1000

func (t *Target) note(s string) {
	t.Lock()
	t.Log = append(t.Log, s)
	t.Unlock()
}

// run answers one command line.
func (t *Target) run(line string, in *bufio.Reader, out, errw io.Writer) int {
	words := Split(line)
	if len(words) >= 9 && words[0] == "sudo" && words[1] == "-S" && words[2] == "-p" {
		prompt, start, args := words[3], words[8], words[9:]
		if t.LostAtSudo {
			return lostCode
		}
		if t.NoSudo {
			fmt.Fprintf(errw, "%s is not in the sudoers file.\n", t.User)
			return 1
		}
		if t.SudoPassword != "" {
			ok := false
			for i := 0; i < 3 && !ok; i++ {
				io.WriteString(errw, prompt)
				pw, err := in.ReadString('\n')
				if err != nil {
					return 1
				}
				pw = strings.TrimSuffix(pw, "\n")
				t.Lock()
				t.Passwords = append(t.Passwords, pw)
				t.Unlock()
				if pw == t.SudoPassword {
					ok = true
				} else {
					io.WriteString(errw, "Sorry, try again.\n")
				}
			}
			if !ok {
				io.WriteString(errw, "sudo: 3 incorrect password attempts\n")
				return 1
			}
		}
		io.WriteString(errw, start+"\n")
		return t.root(args, in, out, errw)
	}
	if t.User == "root" && len(words) > 0 && !strings.Contains(line, "\n") && !strings.HasPrefix(line, "echo") {
		return t.root(words, in, out, errw)
	}
	return t.user(line, in, out, errw)
}

// user answers the commands run as the SSH user.
func (t *Target) user(line string, in *bufio.Reader, out, errw io.Writer) int {
	t.Lock()
	defer t.Unlock()
	switch {
	case strings.Contains(line, `echo "hostname=`):
		t.Log = append(t.Log, "facts")
		sudo := "ok"
		if t.NoSudo {
			sudo = "password"
		} else if t.SudoPassword != "" {
			sudo = "password"
		}
		fmt.Fprintf(out, "hostname=%s\nsudo=%s\nnix=ok\nsystemd=%s\nlab=yes\n", t.Hostname, sudo, yes(t.Systemd))
	case strings.Contains(line, `echo "current=$(readlink /run/current-system`):
		t.Log = append(t.Log, "state")
		t.writeState(out)
	case strings.Contains(line, "nix-store --check-validity --print-invalid"):
		t.Log = append(t.Log, "missing")
		t.Unlock()
		data, _ := io.ReadAll(in)
		t.Lock()
		fmt.Fprintf(out, "free=%d\n", t.FreeKB)
		if t.QueryStderr != "" {
			io.WriteString(errw, t.QueryStderr)
			return 1
		}
		io.WriteString(out, string(data)) // lacks everything
	case strings.Contains(line, "flock -n"):
		t.Log = append(t.Log, "busy")
	case strings.Contains(line, "system-*-link"):
		t.Log = append(t.Log, "generations")
		for g := 1; g <= t.Generation; g++ {
			fmt.Fprintf(out, "gen system-%d-link %s 1700000000\n", g, t.Profile)
		}
		fmt.Fprintf(out, "current system-%d-link\n", t.Generation)
	case strings.HasPrefix(line, "timeout -s KILL"):
		t.Log = append(t.Log, "health")
		if f := t.OnHealth; f != nil {
			t.Unlock()
			f()
			t.Lock()
		}
		return t.HealthCode
	case strings.HasPrefix(line, "systemctl is-system-running"):
		io.WriteString(out, "running\n")
	default:
		t.Log = append(t.Log, "unknown: "+line)
		fmt.Fprintf(errw, "fake: unknown command %q\n", line)
		return 127
	}
	return 0
}

// writeState answers the state probe (t locked).
func (t *Target) writeState(out io.Writer) {
	link := ""
	if t.Generation > 0 {
		link = fmt.Sprintf("system-%d-link", t.Generation)
	}
	fmt.Fprintf(out, "current=%s\nprofile=%s\nprofilepath=%s\nfree=%d\n", t.Current, link, t.Profile, t.FreeKB)
}

// root answers the commands run as root.
func (t *Target) root(args []string, in *bufio.Reader, out, errw io.Writer) int {
	name := ""
	if len(args) >= 4 && args[0] == "sh" && args[1] == "-c" {
		name = args[3]
	} else if len(args) >= 3 && args[0] == "sh" && args[1] == "-c" && strings.Contains(args[2], "history.jsonl") {
		name = "append-history"
	} else if len(args) > 0 {
		name = args[0]
	}
	switch name {
	case "true":
		t.note("sudo true")
		return 0
	case "lock":
		t.note("lock")
		if h := t.OtherHolder; h != nil {
			if args[5] != "1" {
				io.WriteString(out, "busy other@elsewhere since 2026-01-01T00:00:00Z (commit abc)\n")
				return 99
			}
			io.WriteString(out, "waiting other@elsewhere since 2026-01-01T00:00:00Z (commit abc)\n")
			<-h
			t.Lock()
			if t.OnFree != nil {
				t.OnFree(t)
			}
			t.OtherHolder = nil
			t.Unlock()
		}
		io.WriteString(out, "locked\n")
		_, _ = io.Copy(io.Discard, in)
		t.note("unlock")
		return 0
	case "read-history":
		t.note("read-history")
		t.Lock()
		defer t.Unlock()
		for _, l := range t.History {
			io.WriteString(out, l+"\n")
		}
		return 0
	case "append-history":
		data, _ := io.ReadAll(in)
		t.Lock()
		defer t.Unlock()
		t.CommandIn = append(t.CommandIn, string(data))
		t.Log = append(t.Log, "append-history")
		for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			t.History = append(t.History, l)
		}
		return 0
	case "install-activation":
		return t.install(args[4:], in)
	case "wait":
		t.Lock()
		defer t.Unlock()
		switch args[5] {
		case "result":
			io.WriteString(out, t.unit.result+"\n")
		case "rollback":
			io.WriteString(out, t.unit.rollback+"\n")
		case "done":
			io.WriteString(out, "done\n")
		}
		return 0
	case "reached":
		t.note("reached")
		t.Lock()
		defer t.Unlock()
		if t.ReachFails {
			t.rollbackLocked()
			return 3
		}
		t.unit.reached = true
		t.writeState(out)
		return 0
	case "end":
		// The verdict (commit), the end record, the unit's end.
		data, _ := io.ReadAll(in)
		t.Lock()
		defer t.Unlock()
		if args[5] == "1" {
			t.Verdicts = append(t.Verdicts, "commit")
			t.Log = append(t.Log, "verdict commit")
		}
		t.CommandIn = append(t.CommandIn, string(data))
		t.Log = append(t.Log, "append-history", "cleanup")
		for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			t.History = append(t.History, l)
		}
		return 0
	case "verdict":
		t.Lock()
		defer t.Unlock()
		t.Verdicts = append(t.Verdicts, args[5])
		t.Log = append(t.Log, "verdict "+args[5])
		if args[5] == "rollback" {
			t.rollbackLocked(true)
		}
		return 0
	case "outcome":
		t.Lock()
		defer t.Unlock()
		if t.unit.rolledBack {
			io.WriteString(out, t.unit.rollback+"\n")
		}
		return 0
	case "tail":
		io.WriteString(out, "activating the configuration...\nswitch-to-configuration: something failed\n")
		return 0
	case "rm":
		t.note("cleanup")
		return 0
	}
	t.note("unknown root: " + strings.Join(args, " "))
	fmt.Fprintf(errw, "fake: unknown root command %q\n", args)
	return 127
}

func (t *Target) install(a []string, in *bufio.Reader) int {
	_, _ = io.ReadAll(in) // the unit's script
	t.Lock()
	defer t.Unlock()
	t.Activations = append(t.Activations, append([]string(nil), a...))
	// token, systemd, start, ok, failed, vanished, on verdict, rolled back
	// vanished, action, ...
	start, ok, failed, vanished, onVerdict, action := a[2], a[3], a[4], a[5], a[6], a[8]
	if start != "" {
		t.History = append(t.History, start)
	}
	rest := a[9:]
	switch action {
	case "deploy":
		mode, path, setprofile := rest[0], rest[1], rest[2]
		prevGen, _ := strconv.Atoi(rest[3])
		t.unit = unit{mode: mode, path: path, prevGen: prevGen, prevPath: dash(rest[4]), prevCurrent: dash(rest[5]),
			okLine: ok, failedLine: failed, vanishedLine: vanished, verdictLine: onVerdict}
		t.Log = append(t.Log, "activate "+mode)
		if setprofile == "1" {
			t.Generation++
			t.Profile = path
		}
		if mode == "switch" || mode == "test" {
			t.Current = path
		}
		t.unit.result = fmt.Sprintf("switched %d %s", t.SwitchCode, link(t.Generation))
	case "rollback-to":
		gen, _ := strconv.Atoi(rest[0])
		t.Generation, t.Profile, t.Current = gen, rest[1], rest[1]
		t.Log = append(t.Log, "rollback-to "+rest[0])
		t.unit.result = fmt.Sprintf("switched %d %s", t.RollbackCode, link(gen))
	}
	return 0
}

// rollbackLocked does what the unit does to roll back (by itself, or on
// the deployer's verdict).
func (t *Target) rollbackLocked(onVerdict ...bool) {
	u := &t.unit
	switch u.mode {
	case "switch", "boot":
		t.Generation, t.Profile = u.prevGen, u.prevPath
		if u.mode == "switch" {
			t.Current = u.prevPath
		}
	case "test":
		t.Current = u.prevCurrent
	}
	u.rolledBack = true
	u.rollback = fmt.Sprintf("rolledback %d %s", t.RollbackCode, link(t.Generation))
	switch {
	case t.RollbackCode == 0 && len(onVerdict) > 0 && u.verdictLine != "":
		t.History = append(t.History, u.verdictLine)
	case t.RollbackCode == 0 && u.okLine != "":
		t.History = append(t.History, u.okLine)
	case t.RollbackCode != 0 && u.failedLine != "":
		t.History = append(t.History, u.failedLine)
	}
	t.Log = append(t.Log, "rolled back")
}

func link(gen int) string {
	if gen == 0 {
		return ""
	}
	return fmt.Sprintf("system-%d-link", gen)
}

func dash(s string) string {
	if s == "-" {
		return ""
	}
	return s
}

func yes(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// Split splits a command line built with run.Quote into its words.
func Split(line string) []string {
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '\'':
			j := strings.IndexByte(line[i+1:], '\'')
			if j < 0 {
				j = len(line) - i - 1
			}
			cur.WriteString(line[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case c == '"':
			j := strings.IndexByte(line[i+1:], '"')
			if j < 0 {
				j = len(line) - i - 1
			}
			cur.WriteString(line[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case c == ' ' || c == '\t' || c == '\n':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

// SelfRollBack makes the fake unit roll back by itself (magic rollback).
func (t *Target) SelfRollBack() {
	t.Lock()
	defer t.Unlock()
	t.rollbackLocked()
}
