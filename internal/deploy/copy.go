package deploy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/monibahmed/nixos-config/internal/nix"
	"github.com/monibahmed/nixos-config/internal/run"
	"github.com/monibahmed/nixos-config/internal/signing"
	"github.com/monibahmed/nixos-config/internal/target"
	"github.com/monibahmed/nixos-config/internal/trouble"
)

// copy sends what the target lacks of the system's closure: `nix copy` to
// a unix socket on this machine, bridged over the deployment's SSH
// connection to a nix-daemon on the target.
//
// It asks what the target lacks while the lock is being taken (preflight)
// and sends nothing before the lock is held: a busy or failed lock stops
// it. It returns only once the state was read under the lock.
func (j *job) copy(ctx context.Context) *Failure {
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan *Failure, 1)
	go func() { done <- j.copyMissing(cctx) }()
	select {
	case f := <-done:
		if lf := j.awaitLock(); lf != nil {
			return lf
		}
		return f
	case lf := <-j.locking:
		j.locking, j.lockFailed = nil, lf
		if lf != nil {
			cancel()
			<-done
			return lf
		}
		return <-done
	}
}

func (j *job) copyMissing(ctx context.Context) *Failure {
	missing, bytes, free, err := j.missing(ctx)
	if err != nil {
		return targetFailure(err)
	}
	j.free = free
	// Room for the NAR plus the database: 10% and 64 MiB of margin (and
	// what Nix keeps reserved, nix.LooksFull).
	if need := bytes + bytes/10 + 64<<20; len(missing) > 0 && free >= 0 && nix.LooksFull(free, need) {
		return &Failure{Section: trouble.DiskSpace,
			Cause:  fmt.Sprintf("not enough disk space on the target's /nix: the copy needs about %s, %s are free", HumanBytes(need), HumanBytes(free)),
			Remedy: "free space on the target (sudo nix-collect-garbage --delete-older-than 30d) or enlarge its disk"}
	}
	if len(missing) == 0 {
		return nil
	}
	select {
	case <-j.lockTaken:
	case <-ctx.Done():
		return interrupted(stoppedBeforeActivation, nil)
	}
	src, f := j.source(ctx, missing)
	if f != nil {
		return f
	}
	defer src.close()
	f2 := j.transfer(ctx, bytes, src)
	if f2 != nil && f2.retry && ctx.Err() == nil {
		// Transient trouble (paths that appeared meanwhile confuse Nix
		// 2.8's daemon; a connection reset): once more, from scratch.
		j.d.Report.Note(j.t.Name, "copy failed ("+f2.Cause+"), trying once more")
		f2 = j.transfer(ctx, bytes, src)
	}
	if f2 != nil {
		return f2.Failure
	}
	j.res.Copied, j.res.Bytes = len(missing), bytes
	return nil
}

// copySource is where a copy takes the paths from, and how the target is
// to accept them (see Trust).
type copySource struct {
	opts   nix.CopyOptions
	paths  []string
	daemon target.Daemon
	close  func()
}

// source prepares the copy for the run's trust mechanism. For signed
// closures the missing paths are first signed into a temporary binary
// cache on this machine (no root or trusted user needed here), from which
// they are copied with their signatures checked by the target.
func (j *job) source(ctx context.Context, missing map[string]int64) (copySource, *Failure) {
	src := copySource{paths: []string{j.built.path}, close: func() {}, opts: nix.CopyOptions{Substitute: j.o.Substitute}}
	switch j.o.Trust {
	case TrustSudo:
		src.daemon, src.opts.NoCheckSigs = target.DaemonSudo, true
	case TrustTrusted:
		src.daemon, src.opts.NoCheckSigs = target.DaemonUser, true
	case TrustSigned:
		if err := signing.Check(j.o.SigningKey); err != nil {
			return src, &Failure{Section: trouble.TrustedUsers, Cause: err.Error(), Remedy: "see the guide's section on signed closures", Err: err}
		}
		dir, err := run.PrivateDir("nixos-config-signed")
		if err != nil {
			return src, &Failure{Section: trouble.DiskSpace, Cause: "creating the signing cache: " + err.Error(), Remedy: "check this machine's temporary directory", Err: err}
		}
		src.close = func() { os.RemoveAll(dir) }
		paths := make([]string, 0, len(missing))
		for p := range missing {
			paths = append(paths, p)
		}
		sort.Strings(paths)
		cache := signing.CacheURL(dir, j.o.SigningKey)
		parser := &nix.LogParser{}
		if err := j.d.Nix.Copy(ctx, paths, nix.CopyOptions{To: cache, NoRecursive: true}, parser); err != nil {
			src.close()
			return src, &Failure{Section: trouble.TrustedUsers, Cause: "signing the closure failed: " + target.Clean(strings.Join(parserText(parser, err), " | "), 300),
				Remedy: "check the signing key (" + j.o.SigningKey + ") and this machine's temporary directory's free space", Err: err}
		}
		src.daemon, src.paths = target.DaemonUser, paths
		src.opts.From, src.opts.NoRecursive = "file://"+dir, true
	}
	return src, nil
}

func parserText(p *nix.LogParser, err error) []string {
	var text []string
	for _, e := range p.Errors() {
		text = append(text, e.Message)
	}
	text = append(text, p.Plain()...)
	if len(text) == 0 {
		text = append(text, err.Error())
	}
	return target.LastLines(strings.Join(text, "\n"), 3)
}

// missing asks the target which paths of the closure it lacks. A valid
// path implies a valid closure in Nix, so a system the target already runs
// or has as its profile needs nothing.
// It also returns the space free on the target's /nix/store (-1: unknown).
func (j *job) missing(ctx context.Context) (map[string]int64, int64, int64, error) {
	path := j.built.path
	size := j.built.closure
	if size == nil {
		c, err := j.d.Nix.Closures(ctx, []string{path})
		if err != nil {
			return nil, 0, -1, err
		}
		size = c[path]
	}
	var list strings.Builder
	for p := range size {
		list.WriteString(p + "\n")
	}
	// A user other than root reaches the store through the target's
	// nix-daemon: NIX_REMOTE=daemon says so, so that a stopped daemon reads
	// as one in every Nix version (without it, Nix falls back to a store of
	// its own and fails on permissions).
	query := "xargs nix-store --check-validity --print-invalid"
	if j.sess.User != "root" {
		query = "NIX_REMOTE=daemon " + query
	}
	out, err := j.sess.Run(ctx, "nix-store --check-validity", target.FreeProbe+"; "+query, strings.NewReader(list.String()))
	first, rest, _ := strings.Cut(out.Stdout, "\n")
	if err != nil {
		// The free space was printed before the query: a daemon that
		// hung up on a full /nix (Nix 2.34) is told by it.
		if free, perr := target.ParseFree(first); perr == nil {
			j.free = free
		}
		return nil, 0, -1, j.nixRemoteFailure(err, out.Stderr)
	}
	free, err := target.ParseFree(first)
	if err != nil {
		return nil, 0, -1, err
	}
	missing := map[string]int64{}
	var bytes int64
	for _, p := range strings.Fields(rest) {
		// Only paths we asked about count: the answer is untrusted.
		if n, ok := size[p]; ok && missing[p] == 0 {
			missing[p] = n
			bytes += n
		}
	}
	return missing, bytes, free, nil
}

// nixRemoteFailure explains a failed query of the target's store (Nix run
// there over the session).
func (j *job) nixRemoteFailure(err error, stderr string) error {
	msg := stderr + "\n" + err.Error()
	switch nix.ClassifyStoreError(msg) {
	case nix.StoreNoDaemon:
		return &target.Error{Section: trouble.TargetSetup, Cause: "the target's nix-daemon is not running",
			Remedy: "start it on the target (systemctl start nix-daemon.socket)", Err: err}
	case nix.StoreNoNix:
		return &target.Error{Section: trouble.TargetSetup, Cause: "the target has no Nix in " + j.sess.User + "'s PATH",
			Remedy: "install NixOS on the target first (see docs/bootstrap.md)", Err: err}
	case nix.StoreDiskFull:
		return diskFullError(err)
	case nix.StoreDaemonDisconnected:
		// Nix 2.34's daemon hangs up when /nix is full.
		if j.free >= 0 && nix.LooksFull(j.free, 0) {
			return diskFullError(err)
		}
		return &target.Error{Section: trouble.TargetSetup, Cause: "the target's nix-daemon disconnected: " + target.Clean(nix.StoreErrorLine(msg), 300),
			Remedy: "check the target's nix-daemon (journalctl -u nix-daemon)", Err: err}
	}
	if te, ok := err.(*target.Error); ok {
		return te
	}
	return &target.Error{Section: trouble.TargetSetup, Cause: "querying the target's Nix store failed: " + target.Clean(strings.Join(target.LastLines(msg, 2), " | "), 300),
		Remedy: "check Nix on the target", Err: err}
}

func diskFullError(err error) *target.Error {
	return &target.Error{Section: trouble.DiskSpace, Cause: "the target's /nix is full",
		Remedy: "free space on the target (sudo nix-collect-garbage --delete-older-than 30d) or enlarge its disk", Err: err}
}

// copyError is a failed copy, and whether trying again may help.
type copyError struct {
	*Failure
	retry bool
}

// stallTimeout: a copy during which no byte crosses the bridge for this
// long is stopped (the target or Nix hangs).
func (j *job) stallTimeout() time.Duration { return max(j.o.CommandTimeout, 30*time.Second) }

// watchStall cancels a copy through b when nothing crossed it for the
// stall timeout; the returned channel is closed when it did. each, if not
// nil, runs at every look (twice a second).
func (j *job) watchStall(ctx context.Context, cancel context.CancelFunc, b *target.Bridge, each func()) <-chan struct{} {
	return watchIdle(ctx, cancel, b.Idle, j.stallTimeout(), each)
}

// watchIdle cancels when idle() exceeds limit; the returned channel is
// closed when it did. each, if not nil, runs at every look (twice a
// second).
func watchIdle(ctx context.Context, cancel context.CancelFunc, idle func() time.Duration, limit time.Duration, each func()) <-chan struct{} {
	stalled := make(chan struct{})
	go func() {
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if each != nil {
					each()
				}
				if idle() > limit {
					close(stalled)
					cancel()
					return
				}
			}
		}
	}()
	return stalled
}

// transfer runs one `nix copy` through a bridge, with progress from the
// bytes that cross it.
func (j *job) transfer(ctx context.Context, total int64, src copySource) *copyError {
	name := j.t.Name
	j.d.Report.Progress(name, 0, total)
	b, err := j.sess.OpenBridge(ctx, src.daemon)
	if err != nil {
		return &copyError{Failure: &Failure{Section: trouble.Network, Cause: "opening the copy's bridge: " + err.Error(), Remedy: "check this machine's temporary directory", Err: err}}
	}
	defer b.Close()
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stalled := j.watchStall(cctx, cancel, b, func() { j.d.Report.Progress(name, min(b.Sent(), total), total) })
	parser := &nix.LogParser{}
	opts := src.opts
	opts.To = b.URI()
	// From this machine's store, or from a build host's (remote.go).
	err = j.copyClosure(cctx, b, src.paths, opts, parser)
	if err == nil {
		j.d.Report.Progress(name, total, total)
		return nil
	}
	select {
	case <-stalled:
		return &copyError{Failure: &Failure{Section: trouble.Network, Cause: fmt.Sprintf("the copy stalled: nothing crossed the connection for %v", j.stallTimeout()),
			Remedy: "check the network and the target's nix-daemon, then run again", Err: err}, retry: true}
	default:
	}
	if ctx.Err() != nil {
		return &copyError{Failure: interrupted(stoppedBeforeActivation, err)}
	}
	// The build host's side of a copy from there failed before the copy
	// began (copyClosure): its own cause and remedy.
	var bf *Failure
	if errors.As(err, &bf) {
		return &copyError{Failure: bf}
	}
	// A dead connection first: it also fails the sessions the bridge was
	// opening (a sudo that "exited" without a status).
	if dc, ok := j.sess.Conn.(interface{ Dead() error }); ok {
		if d := dc.Dead(); d != nil {
			return &copyError{Failure: connectFailure(d)}
		}
	}
	remote, openErr := b.Errors()
	if openErr != nil {
		f := targetFailure(openErr)
		if f.Section == trouble.Sudo && src.daemon == target.DaemonSudo {
			f.Cause = "the copy's root nix-daemon: " + f.Cause
			f.Remedy += "; or deploy with -trust=signed, which needs no sudo for the copy"
		}
		return &copyError{Failure: f, retry: f.Section == trouble.Network}
	}
	var text []string
	for _, e := range parser.Errors() {
		text = append(text, e.Message)
	}
	text = append(text, parser.Plain()...)
	text = append(text, remote...)
	all := strings.Join(text, "\n")
	kind := nix.ClassifyStoreError(all)
	line := nix.StoreErrorLine(all)
	if line == "" {
		line = strings.Join(target.LastLines(all, 3), " | ")
	}
	line = target.Clean(line, 400)
	switch kind {
	case nix.StoreUntrusted:
		return &copyError{Failure: untrusted(j, err)}
	case nix.StoreDiskFull:
		return &copyError{Failure: diskFull(err)}
	case nix.StoreDaemonDisconnected:
		// The target's daemon hung up mid-copy: Nix 2.34 does that when
		// /nix is full. Ask the target before blaming the daemon.
		if st, serr := j.sess.ReadState(context.WithoutCancel(ctx)); serr == nil && st.Free >= 0 && nix.LooksFull(st.Free, total-min(b.Sent(), total)) {
			return &copyError{Failure: diskFull(err)}
		}
		return &copyError{Failure: &Failure{Section: trouble.TargetSetup, Cause: "the target's nix-daemon disconnected during the copy: " + line,
			Remedy: "check the target's nix-daemon (journalctl -u nix-daemon) and run again", Err: err}}
	case nix.StoreNoDaemon:
		return &copyError{Failure: &Failure{Section: trouble.TargetSetup, Cause: "the target's nix-daemon is not running", Remedy: "start it on the target (systemctl start nix-daemon.socket)", Err: err}}
	case nix.StoreNoNix:
		return &copyError{Failure: &Failure{Section: trouble.TargetSetup, Cause: "the target has no nix-daemon in " + j.sess.User + "'s PATH", Remedy: "install NixOS on the target first (see docs/bootstrap.md)", Err: err}}
	}
	// Network trouble, or something unknown (Nix 2.8's daemon loses track
	// when a path appears during the copy): worth one more try.
	return &copyError{Failure: &Failure{Section: trouble.Network, Cause: "nix copy failed: " + line,
		Remedy: "check the network and the target's disk and Nix", Err: err}, retry: kind == nix.StoreUnknown || kind.Retry()}
}

// untrusted explains a refused copy for the run's trust mechanism.
func untrusted(j *job, err error) *Failure {
	f := &Failure{Section: trouble.TrustedUsers, Err: err}
	switch j.o.Trust {
	case TrustSigned:
		f.Cause = "the target does not trust this deployer's signing key"
		f.Remedy = "commit its public key under " + signing.KeysDir + " (mage signingKey writes it) and deploy that once with -trust=sudo"
	default:
		f.Cause = "the target's Nix refuses unsigned paths from " + j.sess.User + " (it is not a trusted user there)"
		f.Remedy = "deploy with -trust=sudo (the default: a root nix-daemon through sudo) or -trust=signed"
	}
	return f
}

func diskFull(err error) *Failure {
	return &Failure{Section: trouble.DiskSpace, Cause: "the target ran out of disk space during the copy",
		Remedy: "free space on the target (sudo nix-collect-garbage --delete-older-than 30d) or enlarge its disk", Err: err}
}
