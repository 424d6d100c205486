package target

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/monibahmed/nixos-config/internal/sshx"
	"github.com/monibahmed/nixos-config/internal/trouble"
)

//go:embed activate.sh
var activateScript string

// unitScript is activate.sh with the paths it shares with this package.
func unitScript() string {
	return strings.ReplaceAll(activateScript, "@HISTORY_FILE@", HistoryFile)
}

// RunDir holds the activation units' directories (root-only).
const RunDir = "/run/nixos-config"

// Modes of switch-to-configuration.
const (
	ModeSwitch      = "switch"
	ModeBoot        = "boot"
	ModeTest        = "test"
	ModeDryActivate = "dry-activate"
)

// Plan is one activation: what to activate and how the unit on the target
// behaves when the deployer does not come back.
type Plan struct {
	Token      string // NewID()
	Mode       string
	Path       string // the system to activate
	SetProfile bool   // nix-env --set (switch, boot) unless it already is the profile
	Prev       State  // what ran before (read under the lock)
	// Reach is the magic-rollback window: the deployer must reach the
	// target over a new SSH connection within it, or the unit rolls back
	// (0: no magic rollback).
	Reach time.Duration
	// Verdict is how long the unit waits for the deployer's verdict
	// (commit or roll back) after the switch. When none arrives, the unit
	// keeps the system (or rolls back a failed switch when AutoRollback).
	Verdict      time.Duration
	AutoRollback bool
	Systemd      bool
	// History lines: Start is appended when the unit starts; the others
	// are appended by the unit itself when it rolls back (RolledBackOK: by
	// itself, the deployer not back in time; RolledBackOnVerdict: on the
	// deployer's verdict; RolledBackVanished: a failed switch, the deployer
	// gone; RolledBackFailed: any of these failed) or the deployer vanished
	// after a switch that worked (Vanished). An empty one is not written.
	Start, RolledBackOK, RolledBackFailed, Vanished Entry
	RolledBackOnVerdict, RolledBackVanished         Entry
}

var tokenRE = regexp.MustCompile(`^[0-9]{8}T[0-9]{6}-[0-9a-f]{8}$`)

func (p Plan) validate() error {
	if !tokenRE.MatchString(p.Token) {
		return fmt.Errorf("invalid activation token %q", p.Token)
	}
	switch p.Mode {
	case ModeSwitch, ModeBoot, ModeTest, ModeDryActivate:
	default:
		return fmt.Errorf("invalid mode %q", p.Mode)
	}
	if !IsStorePath(p.Path) {
		return fmt.Errorf("invalid system path %q", p.Path)
	}
	for _, q := range []string{p.Prev.Profile, p.Prev.Current} {
		if q != "" && !IsStorePath(q) {
			return fmt.Errorf("invalid previous system %q", q)
		}
	}
	return nil
}

// Activation is a started activation unit.
type Activation struct {
	Plan Plan
	dir  string
}

// Dir is the unit's directory on the target.
func (a *Activation) Dir() string { return a.dir }

// unitHistoryFiles are the history lines the install script writes into
// the unit's directory, from as many arguments, in this order (an empty
// argument: no such file): Plan's Start, RolledBackOK, RolledBackFailed,
// Vanished, RolledBackOnVerdict, RolledBackVanished (see activate.sh).
const unitHistoryFiles = "start history-rolledback-ok history-rolledback-failed history-vanished history-rolledback-verdict history-rolledback-vanished"

const installScript = `token=$1 systemd=$2
shift 2
dir=` + RunDir + `/$token
umask 077
mkdir -p ` + RunDir + ` && chmod 700 ` + RunDir + ` || exit 1
mkdir "$dir" || exit 1
cat >"$dir/activate.sh" || exit 1
for f in ` + unitHistoryFiles + `; do
	[ -n "$1" ] && printf '%s\n' "$1" >"$dir/$f"
	shift
done
if ! flock -n ` + ActivationLockFile + ` true; then
	echo "another activation holds the target: $(head -c 300 ` + ActivationLockInfoFile + ` 2>/dev/null | head -n 1)" >&2
	exit 96
fi
if [ -f "$dir/start" ]; then
	mkdir -p ` + HistoryDir + ` && chmod 700 ` + HistoryDir + ` && cat "$dir/start" >>` + HistoryFile + ` && chmod 600 ` + HistoryFile + ` || exit 1
fi
run="flock -o -n -E 96 ` + ActivationLockFile + ` /bin/sh $dir/activate.sh $dir"
if [ "$systemd" = 1 ]; then
	# -E PATH: a transient unit gets the manager's fixed search path, which
	# on NixOS holds none of the tools the unit runs (its own units set
	# PATH each; nixpkgs nixos/modules/system/boot/systemd.nix).
	systemd-run --unit="nixos-config-$token" --collect --quiet --no-ask-password --service-type=exec \
		-E PATH -E LOCALE_ARCHIVE -E NIXOS_INSTALL_BOOTLOADER=0 $run "$@" || exit 95
else
	# Its own session: sudo (use_pty) ends what is left of its command's
	# session when it exits.
	setsid -f $run "$@" </dev/null >/dev/null 2>&1 || exit 95
fi
i=0
while [ ! -e "$dir/started" ]; do
	i=$((i + 1))
	[ $i -gt 500 ] && { echo "the activation unit did not start" >&2; exit 95; }
	sleep 0.02
done
`

// StartActivation installs the unit's directory, appends the plan's start
// record to the history and starts the unit, in one root round trip.
func (s *Session) StartActivation(ctx context.Context, p Plan) (*Activation, error) {
	if err := p.validate(); err != nil {
		return nil, &Error{Section: trouble.TargetSetup, Cause: err.Error(), Remedy: "this is a bug: report it"}
	}
	lines := make([]string, 0, 6)
	for _, e := range []Entry{p.Start, p.RolledBackOK, p.RolledBackFailed, p.Vanished, p.RolledBackOnVerdict, p.RolledBackVanished} {
		l := ""
		if e.ID != "" {
			t, err := FormatHistory(e)
			if err != nil {
				return nil, err
			}
			l = strings.TrimSuffix(t, "\n")
		}
		lines = append(lines, l)
	}
	sys := "0"
	if p.Systemd {
		sys = "1"
	}
	b := func(v bool) string {
		if v {
			return "1"
		}
		return "0"
	}
	secs := func(d time.Duration) string {
		if d <= 0 {
			return "0"
		}
		return strconv.Itoa(int((d + time.Second - 1) / time.Second))
	}
	prevPath, prevCur := p.Prev.Profile, p.Prev.Current
	args := []string{"sh", "-c", installScript, "install-activation", p.Token, sys}
	args = append(args, lines...)
	args = append(args, "deploy", p.Mode, p.Path, b(p.SetProfile), strconv.Itoa(p.Prev.Generation), orDash(prevPath), orDash(prevCur),
		secs(p.Reach), secs(p.Verdict), b(p.AutoRollback))
	out, err := s.RunRoot(ctx, Root{Name: "starting the activation", Args: args, Stdin: strings.NewReader(unitScript())})
	if err != nil {
		e := commandError("starting the activation", err, out)
		if out.Code == 96 {
			e = &Error{Section: trouble.Locks, Cause: Clean(strings.TrimSpace(out.Stderr), 300), Remedy: "wait for it to finish, then deploy again", Err: err}
		}
		return nil, e
	}
	return &Activation{Plan: p, dir: RunDir + "/" + p.Token}, nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// Switched is the outcome of switch-to-configuration on the target.
type Switched struct {
	// Code is switch-to-configuration's exit status; 90: not a NixOS
	// system, 91: setting the profile failed (nothing was activated).
	Code       int
	Generation int // of the system profile afterwards (0: none)
}

// Activated reports whether the switch changed anything.
func (w Switched) Activated() bool { return w.Code != 90 && w.Code != 91 }

// waitFn defines wait_file <dir> <file>: it waits for a file of the unit
// without polling: the unit holds result.lock until it wrote result and
// done.lock until it ends (see activate.sh), so taking the lock returns
// the moment the file is there, or the unit is gone. Every second it
// prints a line: when the deployer is gone (sshd closes the command's
// output), the write fails and the waiting ends instead of lingering.
const waitFn = `wait_file() {
	lock=$1/done.lock
	[ "$2" = result ] && lock=$1/result.lock
	while [ ! -e "$1/$2" ]; do
		flock -s -w 1 -E 75 "$lock" true 2>/dev/null
		case $? in
		0)
			[ -e "$1/$2" ] && return 0
			echo "the activation unit ended without a result" >&2
			return 94
			;;
		75) echo waiting || return 98 ;;
		*)
			echo "cannot wait for the activation unit: flock on $lock failed" >&2
			return 94
			;;
		esac
	done
}
`

// wakeFn defines wake <dir>: after the deployer wrote reached or verdict,
// one byte into the unit's FIFO ends its wait (opened read-write, so that
// it never blocks, even when the unit is gone).
const wakeFn = `wake() { [ -p "$1/wake" ] && printf x 1<>"$1/wake"; true; }
`

const waitScript = waitFn + `wait_file "$1" "$2" || exit
head -c 512 "$1/$2"
`

// wait waits (as root, on sess) until the unit wrote file.
func (a *Activation) wait(ctx context.Context, sess *Session, file string, timeout time.Duration) (string, error) {
	out, err := sess.RunRoot(ctx, Root{Name: "waiting for the activation", Args: []string{"sh", "-c", waitScript, "wait", a.dir, file}, Timeout: timeout})
	if err != nil {
		return "", commandError("waiting for the activation", err, out)
	}
	lines := LastLines(out.Stdout, 1)
	if len(lines) == 0 {
		return "", nil
	}
	return strings.TrimSpace(lines[0]), nil
}

// WaitSwitched waits for switch-to-configuration's outcome.
func (a *Activation) WaitSwitched(ctx context.Context, sess *Session) (Switched, error) {
	line, err := a.wait(ctx, sess, "result", sess.Limits.Activation)
	if err != nil {
		return Switched{}, err
	}
	return parseSwitched(line)
}

func parseSwitched(line string) (Switched, error) {
	f := strings.Fields(line)
	if len(f) < 2 || (f[0] != "switched" && f[0] != "rolledback") {
		return Switched{}, badFact("activation result", line)
	}
	code, err := strconv.Atoi(f[1])
	if err != nil || code < 0 || code > 255 {
		return Switched{}, badFact("activation exit status", line)
	}
	w := Switched{Code: code}
	if len(f) >= 3 {
		if g, ok := ParseGeneration(f[2]); ok {
			w.Generation = g
		}
	}
	return w, nil
}

// Log returns the last lines of the switch's output (sanitized).
func (a *Activation) Log(ctx context.Context, sess *Session, n int) []string {
	out, err := sess.RunRoot(ctx, Root{Name: "reading the activation log", Args: []string{"tail", "-c", "65536", a.dir + "/switch.log"}})
	if err != nil {
		return nil
	}
	var lines []string
	for _, l := range LastLines(out.Stdout, n) {
		lines = append(lines, Clean(l, 300))
	}
	return lines
}

// reachedStateScript ends the magic-rollback window, then reads the
// state. The deployer and the unit whose window ran out race for the same
// mkdir: whoever makes reached decides. Exit 3: the unit made it; it rolls
// back by itself, and this waits for that outcome.
const reachedStateScript = waitFn + wakeFn + `[ -d "$1" ] || exit 3
if mkdir "$1/reached" 2>/dev/null; then
	: >"$1/reached/deployer"
	wake "$1"
elif [ ! -e "$1/reached/deployer" ]; then
	wait_file "$1" rollback >/dev/null 2>&1
	exit 3
fi
` + stateScript

// ReachedState tells the unit that the deployer reached the target over a
// new connection (ends the magic-rollback window) and reads the target's
// state, in one root round trip.
func (a *Activation) ReachedState(ctx context.Context, sess *Session) (State, error) {
	out, err := sess.RunRoot(ctx, Root{Name: "confirming the new connection", Args: []string{"sh", "-c", reachedStateScript, "reached", a.dir}, Timeout: sess.Limits.Activation})
	if err != nil {
		return State{}, commandError("confirming the switch", err, out)
	}
	return ParseState(out.Stdout)
}

// endScript: see End. Its output lines "failed verdict" and "failed
// history" name what did not work; "waiting" lines only keep it alive.
const endScript = waitFn + wakeFn + `dir=$1 commit=$2
if [ "$commit" = 1 ] && ! { printf 'commit\n' >"$dir/verdict.tmp" && mv "$dir/verdict.tmp" "$dir/verdict" && wake "$dir"; }; then
	echo "failed verdict"
fi
(umask 077 && mkdir -p ` + HistoryDir + ` && chmod 700 ` + HistoryDir + ` && cat >>` + HistoryFile + ` && chmod 600 ` + HistoryFile + `) || echo "failed history"
wait_file "$dir" done
rm -rf -- "$dir"
`

// End finishes the activation from the deployer's side in one root round
// trip: the verdict "commit" (when commit; a rollback sent its own), the
// deployment's end record appended to the history, the wait for the unit
// to end (freeing the activation lock) and the removal of its directory.
// It reports the verdict's and the record's failures apart.
func (a *Activation) End(ctx context.Context, sess *Session, commit bool, end Entry) (verdictErr, historyErr error) {
	text, err := FormatHistory(end)
	if err != nil {
		return nil, err
	}
	c := "0"
	if commit {
		c = "1"
	}
	out, err := sess.RunRoot(ctx, Root{Name: "ending the activation", Args: []string{"sh", "-c", endScript, "end", a.dir, c}, Stdin: strings.NewReader(text)})
	if strings.Contains(out.Stdout, "failed verdict") {
		verdictErr = &Error{Section: trouble.TargetSetup, Cause: "writing the verdict into " + a.dir + " failed", Remedy: "check the target's /run"}
	}
	if strings.Contains(out.Stdout, "failed history") {
		historyErr = &Error{Section: trouble.TargetSetup, Cause: "appending to " + HistoryFile + " failed", Remedy: "check the target's /var/lib (disk full?)"}
	}
	// Ended without a status (lost connection, timeout): nothing is known.
	var ee *sshx.ExitError
	if err != nil && !errors.As(err, &ee) {
		e := commandError("ending the activation", err, out)
		return e, e
	}
	return verdictErr, historyErr
}

// RollBack tells the unit to roll back and waits for the outcome.
func (a *Activation) RollBack(ctx context.Context, sess *Session) (Switched, error) {
	if err := a.verdict(ctx, sess, "rollback"); err != nil {
		return Switched{}, err
	}
	line, err := a.wait(ctx, sess, "rollback", sess.Limits.Activation)
	if err != nil {
		return Switched{}, err
	}
	return parseSwitched(line)
}

func (a *Activation) verdict(ctx context.Context, sess *Session, v string) error {
	out, err := sess.RunRoot(ctx, Root{Name: "sending the verdict", Args: []string{"sh", "-c", wakeFn + `printf '%s\n' "$2" >"$1/verdict.tmp" && mv "$1/verdict.tmp" "$1/verdict" && wake "$1"`, "verdict", a.dir, v}})
	if err != nil {
		return commandError("sending the verdict to the activation", err, out)
	}
	return nil
}

// RolledBackByItself reports whether the unit rolled back on its own
// (magic rollback), with the outcome.
func (a *Activation) RolledBackByItself(ctx context.Context, sess *Session) (bool, Switched, error) {
	out, err := sess.RunRoot(ctx, Root{Name: "reading the activation outcome", Args: []string{"sh", "-c", `cat "$1/rollback" 2>/dev/null || true`, "outcome", a.dir}})
	if err != nil {
		return false, Switched{}, commandError("reading the activation outcome", err, out)
	}
	line := strings.TrimSpace(out.Stdout)
	if line == "" {
		return false, Switched{}, nil
	}
	w, err := parseSwitched(line)
	return err == nil, w, err
}

// WaitDone waits until the unit ended (and freed the activation lock).
func (a *Activation) WaitDone(ctx context.Context, sess *Session) error {
	_, err := a.wait(ctx, sess, "done", sess.Limits.Command)
	return err
}

// Remove deletes the unit's directory (after it ended).
func (a *Activation) Remove(ctx context.Context, sess *Session) {
	_, _ = sess.RunRoot(ctx, Root{Name: "cleaning up", Args: []string{"rm", "-rf", "--", a.dir}})
}

// RollbackTo activates an existing generation (mage rollback) under the
// activation lock, and returns the outcome.
func (s *Session) RollbackTo(ctx context.Context, token string, systemd bool, generation int, path string) (Switched, []string, error) {
	if !tokenRE.MatchString(token) || !IsStorePath(path) || generation < 1 || generation >= MaxGeneration {
		return Switched{}, nil, &Error{Section: trouble.Rollbacks, Cause: "invalid rollback target", Remedy: "this is a bug: report it"}
	}
	sys := "0"
	if systemd {
		sys = "1"
	}
	args := []string{"sh", "-c", installScript, "install-activation", token, sys}
	args = append(args, make([]string, len(strings.Fields(unitHistoryFiles)))...) // no history lines
	args = append(args, "rollback-to", strconv.Itoa(generation), path)
	out, err := s.RunRoot(ctx, Root{Name: "starting the rollback", Args: args, Stdin: strings.NewReader(unitScript())})
	if err != nil {
		return Switched{}, nil, commandError("starting the rollback", err, out)
	}
	a := &Activation{dir: RunDir + "/" + token}
	defer a.Remove(context.WithoutCancel(ctx), s)
	line, err := a.wait(ctx, s, "result", s.Limits.Activation)
	if err != nil {
		return Switched{}, nil, err
	}
	w, err := parseSwitched(line)
	if err != nil {
		return w, nil, err
	}
	var log []string
	if w.Code != 0 {
		log = a.Log(ctx, s, 6)
	}
	_ = a.WaitDone(ctx, s)
	return w, log, nil
}
