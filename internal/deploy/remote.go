package deploy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/monibahmed/nixos-config/internal/inventory"
	"github.com/monibahmed/nixos-config/internal/nix"
	"github.com/monibahmed/nixos-config/internal/run"
	"github.com/monibahmed/nixos-config/internal/sshx"
	"github.com/monibahmed/nixos-config/internal/target"
	"github.com/monibahmed/nixos-config/internal/trouble"
)

// remoteBuild builds the target's evaluated system where its plan says:
// on the target itself, or on a build host. The derivations go there
// through a bridge on the deployment's own SSH connection (`nix copy
// --derivation`: .drv files are content-addressed, so a daemon that does
// not trust the SSH user takes them too), `nix-store --realise` builds
// them there as the SSH user (any user of the daemon may build) with
// Nix's progress, and nothing of the system itself crosses this machine.
// For a build host the closure's sizes are read for the copy stage,
// which then copies from the build host (copySource).
func (j *job) remoteBuild(ctx context.Context) *Failure {
	p := j.shared.plan[j.t.Name]
	bh := &buildHost{name: j.t.Name, sess: j.sess}
	self := p.kind == inventory.BuildTarget
	if !self {
		var f *Failure
		if bh, f = j.shared.hosts.get(ctx, p.host, j.o); f != nil {
			return f
		}
	}
	who := builderName(bh.name, self)
	if plat := bh.platforms(ctx); plat != nil && !plat.CanBuild(j.built.system) {
		return lacksSystem(who, j.built.system, plat.String(), self)
	}
	root, f := j.gcRoot(ctx, bh, who)
	if f != nil {
		return f
	}
	if j.validOn(ctx, bh.sess, j.built.path) {
		j.d.Report.Note(j.t.Name, "already built on "+bh.name)
		if f := j.realise(ctx, bh, who, root, j.built.path); f != nil {
			return f
		}
	} else {
		j.d.Report.Note(j.t.Name, "building on "+bh.name+" (evaluated here)")
		if f := j.sendDerivations(ctx, bh, who); f != nil {
			return f
		}
		if f := j.realise(ctx, bh, who, root, j.built.drv); f != nil {
			return f
		}
	}
	if self {
		return nil
	}
	return j.builderClosure(ctx, bh, who)
}

// skipCopy: nothing to copy to this machine itself, nor to a target that
// built its own system.
func (j *job) skipCopy() bool {
	return IsLocal(j.t.Address) || j.shared.plan[j.t.Name].kind == inventory.BuildTarget
}

func builderName(name string, self bool) string {
	if self {
		return "the target " + name
	}
	return "the build host " + name
}

// validOn tells whether path is valid in the session's store.
func (j *job) validOn(ctx context.Context, s *target.Session, path string) bool {
	_, err := s.Run(ctx, "nix-store --check-validity", "nix-store --check-validity "+run.Quote(path), nil)
	return err == nil
}

// sendDerivations copies the system's derivation closure to the builder.
func (j *job) sendDerivations(ctx context.Context, bh *buildHost, who string) *Failure {
	// The SSH user's daemon: derivations are content-addressed, so even a
	// daemon that trusts no one but root adds them (any -trust).
	b, err := bh.sess.OpenBridge(ctx, target.DaemonUser)
	if err != nil {
		return &Failure{Section: trouble.Network, Cause: "opening the bridge to " + bh.name + ": " + err.Error(), Remedy: "check this machine's temporary directory", Err: err}
	}
	defer b.Close()
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stalled := j.watchStall(cctx, cancel, b, nil)
	parser := &nix.LogParser{}
	err = j.d.Nix.Copy(cctx, []string{j.built.drv}, nix.CopyOptions{To: b.URI(), Derivation: true}, parser)
	if err == nil {
		j.d.Report.Note(j.t.Name, fmt.Sprintf("derivations sent to %s (%s)", bh.name, HumanBytes(b.Sent())))
		return nil
	}
	select {
	case <-stalled:
		return &Failure{Section: trouble.RemoteBuild, Cause: fmt.Sprintf("sending the derivations to %s stalled: nothing crossed the connection for %v", who, j.stallTimeout()),
			Remedy: "check the network and the nix-daemon there, then run again", Err: err}
	default:
	}
	if ctx.Err() != nil {
		return interrupted(stoppedBeforeActivation, err)
	}
	if _, openErr := b.Errors(); openErr != nil {
		return builderUnreachable(bh.name, targetFailure(openErr))
	}
	remote, _ := b.Errors()
	text := errorText(parser) + "\n" + strings.Join(remote, "\n")
	if f := j.deadBuilder(bh); f != nil {
		return f
	}
	switch nix.ClassifyStoreError(text) {
	case nix.StoreDiskFull:
		return j.outOfDisk(ctx, bh, who, err)
	case nix.StoreUntrusted:
		return &Failure{Section: trouble.TrustedUsers, Cause: who + " refuses the derivations from " + bh.sess.User,
			Remedy: "derivations are content-addressed and need no trust: check its Nix (2.8 or newer) and its nix.conf (require-sigs, allowed-users)", Err: err}
	}
	return &Failure{Section: trouble.RemoteBuild, Cause: "sending the derivations to " + who + " failed: " + target.Clean(strings.Join(target.LastLines(text, 2), " | "), 300),
		Remedy: "check the network and Nix there, then run again", Err: err}
}

// gcRoot names the garbage collector root that keeps the system on the
// builder from the moment it is built (or found) until this deployment
// ends: the copy from a build host, or the activation on a target that
// built for itself, must not find it collected by the builder's
// nix.gc.automatic or someone's nix-collect-garbage in between. The root
// is a link in the builder's run directory (workDir); the job's close
// removes it (the root then no longer counts: an indirect root whose link
// is gone), and the target's profile holds what was activated.
func (j *job) gcRoot(ctx context.Context, bh *buildHost, who string) (string, *Failure) {
	dir, err := bh.workDir(ctx)
	if err != nil {
		if f := j.deadBuilder(bh); f != nil {
			return "", f
		}
		return "", &Failure{Section: trouble.RemoteBuild, Cause: "creating a private directory on " + who + ": " + target.Clean(err.Error(), 200),
			Remedy: "check /tmp there (mktemp -d must work for " + bh.sess.User + ")", Err: err}
	}
	root := dir + "/" + j.t.Name + ".system"
	j.dropRoot = func() {
		if bh.name == j.t.Name {
			bh.releaseDir() // the target's own connection: this job's alone
			return
		}
		if j.deadBuilder(bh) != nil {
			return // the run directory's holder removes it (see workDir)
		}
		// Bounded by the session's command limit, even after an interrupt.
		_, _ = bh.sess.Run(context.Background(), "rm", "rm -f "+run.Quote(root), nil)
	}
	return root, nil
}

// holdScript creates the run directory, prints its name, and removes it
// when its input ends: when the deployer closes it, and when the deployer
// is gone (a killed deployer's connection ends; sshd then closes the
// command's input, and a command without a terminal is not signalled).
const holdScript = `d=$(mktemp -d /tmp/nixos-config-run.XXXXXXXXXX) || exit 1
printf '%s\n' "$d"
cat >/dev/null
rm -rf "$d"`

// workDir is this run's private directory on the builder (mode 0700, from
// mktemp), made once per connection: the roots of the systems built there
// and the copy's socket live in it. A command holding it runs until the
// run ends (releaseDir) or the connection does, and then removes it, so
// even a deployer killed with SIGKILL leaves no root behind.
func (bh *buildHost) workDir(ctx context.Context) (string, error) {
	bh.dirOnce.Do(func() { bh.dir, bh.holder, bh.dirErr = holdDir(ctx, bh.sess) })
	return bh.dir, bh.dirErr
}

// releaseDir ends the command holding the run directory, which removes it.
func (bh *buildHost) releaseDir() {
	bh.dirOnce.Do(func() { bh.dirErr = errors.New("released") })
	if bh.holder == nil {
		return
	}
	p := bh.holder
	bh.holder = nil
	_ = p.Stdin.Close()
	done := make(chan struct{})
	go func() { _ = p.Wait(); close(done) }()
	// Its removal runs once its input ends, whether or not this waits:
	// a little, so that a clean run leaves nothing behind, not long (a
	// hung builder must not hold the run's end).
	select {
	case <-done:
	case <-time.After(min(2*time.Second, bh.sess.Limits.Command)):
	}
	_ = p.Close()
}

func holdDir(ctx context.Context, s *target.Session) (string, *sshx.Proc, error) {
	p, err := s.Conn.Start(ctx, holdScript)
	if err != nil {
		return "", nil, err
	}
	go func() { _, _ = io.Copy(io.Discard, io.LimitReader(p.Stderr, 64<<10)) }()
	line := make(chan string, 1)
	go func() {
		// The directory's name: one short line (read byte by byte, bounded).
		var b []byte
		one := make([]byte, 1)
		for len(b) < 128 {
			if n, err := p.Stdout.Read(one); n == 0 || err != nil || one[0] == '\n' {
				break
			}
			b = append(b, one[0])
		}
		line <- string(b)
		_, _ = io.Copy(io.Discard, io.LimitReader(p.Stdout, 64<<10))
	}()
	var dir string
	select {
	case dir = <-line:
	case <-ctx.Done():
		p.Close()
		return "", nil, fmt.Errorf("interrupted: %w", ctx.Err())
	case <-time.After(s.Limits.Command):
		p.Close()
		return "", nil, fmt.Errorf("mktemp -d did not answer within %v", s.Limits.Command)
	}
	if !runDirRE.MatchString(dir) {
		p.Close()
		return "", nil, fmt.Errorf("mktemp printed %q", target.Clean(dir, 100))
	}
	return dir, p, nil
}

var runDirRE = regexp.MustCompile(`^/tmp/nixos-config-run\.[A-Za-z0-9]{10}$`)

// realise builds what (the system's derivation, or the system itself when
// it is already valid there) on the builder with `nix-store --realise`
// (every Nix from 2.8 on), its progress streamed through a LogParser, and
// roots the system at root (an indirect root: any user of the daemon may
// add one).
func (j *job) realise(ctx context.Context, bh *buildHost, who, root, what string) *Failure {
	name := j.t.Name
	parser := &nix.LogParser{OnProgress: func(p nix.Progress) { j.d.Report.RemoteBuild(name, bh.name, p.BuildsDone, p.BuildsExpected) }}
	out := &bounded{max: 64 << 10}
	// With --add-root, Nix prints the root's name; readlink then names
	// the system it holds. (--indirect: needed by Nix 2.8, ignored since.)
	// No time limit on the whole build: a build takes what it takes. A
	// silent one is bounded: the builder's Nix stops a build step that
	// prints nothing for -buildsilence (--max-silent-time, a flag of
	// nix-store since long before 2.8), and this side ends the session
	// when not a byte arrived for that long plus a margin (a builder that
	// keeps the connection alive but never answers). A dead connection is
	// found by the keepalives, an interrupt closes the session (and the
	// daemon then stops the build).
	silence := j.buildSilence()
	secs := int64((silence + time.Second - 1) / time.Second)
	args := append([]string{"--max-silent-time", strconv.FormatInt(secs, 10)}, nix.RealiseArgs()...)
	line := "nix-store " + run.ShellJoin(append(args, "--add-root", root, "--indirect", what)...) + " >/dev/null && readlink " + run.Quote(root)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	seen := &lastByte{}
	seen.touch()
	silent := watchIdle(sctx, cancel, seen.idle, silence+silenceMargin(silence), nil)
	_, err := bh.sess.Conn.Exec(sctx, sshx.Command{Line: line, Stdout: seen.wrap(out), Stderr: seen.wrap(parser), Name: "nix-store --realise"})
	if err != nil {
		select {
		case <-silent:
			if ctx.Err() == nil {
				return &Failure{Section: trouble.RemoteBuild, Cause: fmt.Sprintf("the build on %s printed nothing for %v", bh.name, silence),
					Remedy: "check the build there (a hung build step, or its Nix or machine); nothing was copied to the target; raise -buildsilence if a build step is that quiet", Err: err}
			}
		default:
		}
		return j.realiseFailure(ctx, bh, who, parser, err)
	}
	for _, p := range strings.Fields(out.String()) {
		if p == j.built.path {
			return nil
		}
	}
	return &Failure{Section: trouble.RemoteBuild, Cause: fmt.Sprintf("the build on %s did not report %s (it printed %q)", who, j.built.path, target.Clean(out.String(), 200)),
		Remedy: "check Nix there (nix-store --realise " + j.built.drv + ")"}
}

func (j *job) realiseFailure(ctx context.Context, bh *buildHost, who string, p *nix.LogParser, err error) *Failure {
	if ctx.Err() != nil {
		return interrupted(stoppedBeforeActivation+"; the build there stops too", err)
	}
	if f := j.deadBuilder(bh); f != nil {
		return f
	}
	var se *sshx.Error
	if errors.As(err, &se) {
		return builderUnreachable(bh.name, connectFailure(err))
	}
	text := errorText(p)
	for _, e := range p.Errors() {
		if drv := drvIn(e.Message); drv != "" {
			text += "\n" + strings.Join(p.BuildLog(drv), "\n")
		}
	}
	if sys, ok := nix.PlatformMismatch(text); ok {
		return lacksSystem(who, sys, "", bh.name == j.t.Name)
	}
	if nix.ClassifyStoreError(text) == nix.StoreDiskFull {
		return j.outOfDisk(ctx, bh, who, err)
	}
	if nix.ClassifyStoreError(text) == nix.StoreNoDaemon {
		return &Failure{Section: trouble.TargetSetup, Cause: "the nix-daemon of " + who + " is not running", Remedy: "start it there (systemctl start nix-daemon.socket)", Err: err}
	}
	if st, serr := bh.sess.ReadState(context.WithoutCancel(ctx)); serr == nil && st.Free >= 0 && st.Free < 32<<20 {
		return j.outOfDisk(ctx, bh, who, err)
	}
	errs := p.Errors()
	if len(errs) == 0 {
		var ee *sshx.ExitError
		msg := err.Error()
		if errors.As(err, &ee) {
			msg = fmt.Sprintf("exit status %d", ee.Code)
		}
		return &Failure{Section: trouble.RemoteBuild, Cause: "nix-store --realise on " + who + " failed (" + target.Clean(msg, 100) + "): " + target.Clean(strings.Join(target.LastLines(text, 2), " | "), 300),
			Remedy: "check Nix there", Err: err}
	}
	e := errs[len(errs)-1]
	f := &Failure{Section: trouble.Build, Cause: "build failed on " + bh.name + ": " + target.Clean(e.OneLine(), 400),
		Remedy: "see the builder's output below; fix the package or configuration and deploy again", Err: err}
	if strings.Contains(e.Message, "timed out") && strings.Contains(e.Message, "silence") {
		// Nix stopped a build step quiet for --max-silent-time.
		f.Remedy = fmt.Sprintf("a build step printed nothing for %v: see the builder's output below; raise -buildsilence if it is that quiet", j.buildSilence())
	}
	if drv := drvIn(e.Message); drv != "" {
		for _, l := range p.BuildLog(drv) {
			f.Detail = append(f.Detail, target.Clean(l, 300))
		}
	}
	return f
}

// drvIn finds the first store derivation a message names.
func drvIn(msg string) string {
	msg = nix.StripANSI(msg)
	i := strings.Index(msg, "/nix/store/")
	if i < 0 {
		return ""
	}
	drv := msg[i:]
	if k := strings.IndexAny(drv, "' \n"); k >= 0 {
		drv = drv[:k]
	}
	if !strings.HasSuffix(drv, ".drv") {
		return ""
	}
	return drv
}

// deadBuilder reports a builder whose connection died.
func (j *job) deadBuilder(bh *buildHost) *Failure {
	if dc, ok := bh.sess.Conn.(interface{ Dead() error }); ok {
		if d := dc.Dead(); d != nil {
			if bh.name == j.t.Name {
				return connectFailure(d)
			}
			return builderUnreachable(bh.name, connectFailure(d))
		}
	}
	return nil
}

func lacksSystem(who, system, builds string, self bool) *Failure {
	cause := fmt.Sprintf("%s cannot build %s systems", who, system)
	if builds != "" {
		cause += " (its Nix builds " + builds + ")"
	}
	remedy := fmt.Sprintf(`build on a machine of that system: a build host whose "system" is %s ("build": "<name>" in target.json, or -buildon=<name>)`, system)
	if !self {
		remedy += `, or the target itself (-buildon=target); an emulating build host needs extra-platforms = ` + system + ` in its nix.conf`
	} else {
		remedy += `; check "system" in the target's target.json`
	}
	return &Failure{Section: trouble.RemoteBuild, Cause: cause, Remedy: remedy + "; nothing was copied to the target"}
}

func (j *job) outOfDisk(ctx context.Context, bh *buildHost, who string, err error) *Failure {
	free := ""
	if st, serr := bh.sess.ReadState(context.WithoutCancel(ctx)); serr == nil && st.Free >= 0 {
		free = " (" + HumanBytes(st.Free) + " free on its /nix)"
	}
	return &Failure{Section: trouble.RemoteBuild, Cause: who + " ran out of disk space during the build" + free,
		Remedy: "free space there (sudo nix-collect-garbage --delete-older-than 30d) or build elsewhere (-buildon=local, target or another build host); the target is unchanged", Err: err}
}

// builderClosure reads the closure of the system built on a build host
// (path and NAR size), through a bridge, for the copy stage's missing
// paths and disk check.
func (j *job) builderClosure(ctx context.Context, bh *buildHost, who string) *Failure {
	b, err := bh.sess.OpenBridge(ctx, target.DaemonUser)
	if err != nil {
		return &Failure{Section: trouble.Network, Cause: "opening the bridge to " + bh.name + ": " + err.Error(), Remedy: "check this machine's temporary directory", Err: err}
	}
	defer b.Close()
	// A query, however large the closure: bounded like the copy's stall.
	qctx, cancel := context.WithTimeout(ctx, 4*j.stallTimeout())
	defer cancel()
	c, err := j.d.Nix.StoreClosures(qctx, b.URI(), []string{j.built.path})
	if err != nil {
		if f := j.deadBuilder(bh); f != nil {
			return f
		}
		return &Failure{Section: trouble.RemoteBuild, Cause: "reading the closure of the system on " + who + ": " + target.Clean(err.Error(), 300), Remedy: "check Nix there, then run again", Err: err}
	}
	j.built.closure, j.built.size = c[j.built.path], 0
	for _, n := range j.built.closure {
		j.built.size += n
	}
	return nil
}

// copyClosure copies the system's closure to the target through its
// bridge b: `nix copy` here for a system built here; for a system built on
// a build host, `nix copy` runs there, to a socket sshd opens on the build
// host for this machine (streamlocal forwarding), whose connections this
// machine carries on to the target's bridge. The paths thus stream from the
// build host through this machine to the target without entering this
// machine's store. (`nix copy --from unix://<bridge>` cannot do it: Nix
// reads the NARs of a unix:// store from the local file system. The build
// host copying to the target over its own SSH would need keys and host
// keys between the two; this needs nothing new, at the price of the bytes
// crossing this machine's link twice.)
func (j *job) copyClosure(ctx context.Context, b *target.Bridge, paths []string, o nix.CopyOptions, parser *nix.LogParser) error {
	p := j.shared.plan[j.t.Name]
	if p.kind != placeHost {
		return j.d.Nix.Copy(ctx, paths, o, parser)
	}
	fail := func(err error) error {
		// The copy's failure is explained from the parser's lines.
		parser.Write([]byte("error: " + err.Error() + "\n"))
		return err
	}
	bh, f := j.shared.hosts.get(ctx, p.host, j.o)
	if f != nil {
		return fail(f)
	}
	fw, ok := bh.sess.Conn.(interface {
		ListenUnix(string) (net.Listener, error)
	})
	if !ok {
		return fail(errors.New("the connection to the build host " + bh.name + " cannot forward a socket"))
	}
	dir, err := bh.workDir(ctx)
	if err != nil {
		return fail(fmt.Errorf("creating a private directory on %s: %w", bh.name, err))
	}
	sock := dir + "/" + j.t.Name + ".sock"
	defer func() {
		if j.deadBuilder(bh) == nil {
			_, _ = bh.sess.Run(context.WithoutCancel(ctx), "rm", "rm -f "+run.Quote(sock), nil)
		}
	}()
	ln, err := fw.ListenUnix(sock)
	if err != nil {
		if f := j.deadBuilder(bh); f != nil {
			return fail(f)
		}
		return fail(&Failure{Section: trouble.RemoteBuild, Cause: fmt.Sprintf("the build host %s refused to forward a socket to this machine for the copy (%s)", bh.name, target.Clean(err.Error(), 120)),
			Remedy: "allow it in the build host's sshd (AllowStreamLocalForwarding and DisableForwarding, in services.openssh.settings on NixOS) or build elsewhere (-buildon=target or -buildon=local); the target is unchanged", Err: err})
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go splice(c, b.Socket)
		}
	}()
	o.To = "unix://" + sock
	line := "nix --extra-experimental-features nix-command " + run.ShellJoin(append(nix.CopyArgs(o), j.built.path)...)
	_, err = bh.sess.Conn.Exec(ctx, sshx.Command{Line: line, Stdout: &bounded{max: 64 << 10}, Stderr: parser, Name: "nix copy"})
	return err
}

// splice connects c to the unix socket at path, both ways, until either
// side ends.
func splice(c net.Conn, path string) {
	defer c.Close()
	t, err := net.Dial("unix", path)
	if err != nil {
		return
	}
	defer t.Close()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(t, c); closeWrite(t); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, t); closeWrite(c); done <- struct{}{} }()
	<-done
	<-done
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
}

// bounded keeps the first max bytes written to it.
type bounded struct {
	mu  sync.Mutex
	max int
	b   strings.Builder
}

func (w *bounded) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if room := w.max - w.b.Len(); room > 0 {
		if len(p) > room {
			w.b.Write(p[:room])
		} else {
			w.b.Write(p)
		}
	}
	return len(p), nil
}

func (w *bounded) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// buildSilence is how long a remote build may print nothing.
func (j *job) buildSilence() time.Duration {
	if j.o.BuildSilence > 0 {
		return j.o.BuildSilence
	}
	return DefaultBuildSilence
}

// silenceMargin leaves the builder's Nix time to stop a silent build and
// say so before this side gives up on the session.
func silenceMargin(d time.Duration) time.Duration {
	return min(max(d/10, time.Second), time.Minute)
}

// lastByte records when a byte last arrived on any of the writers it
// wraps.
type lastByte struct{ at atomic.Int64 }

func (l *lastByte) touch() { l.at.Store(time.Now().UnixNano()) }

func (l *lastByte) idle() time.Duration { return time.Since(time.Unix(0, l.at.Load())) }

func (l *lastByte) wrap(w io.Writer) io.Writer {
	return writerFunc(func(p []byte) (int, error) {
		l.touch()
		return w.Write(p)
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
