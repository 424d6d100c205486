package deploy

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/monibahmed/nixos-config/internal/nix"
	"github.com/monibahmed/nixos-config/internal/target"
	"github.com/monibahmed/nixos-config/internal/trouble"
)

// copy sends what the target lacks of the system's closure: `nix copy` to
// a unix socket on this machine, bridged over the deployment's SSH
// connection to a nix-daemon on the target.
func (j *job) copy(ctx context.Context) *Failure {
	missing, bytes, err := j.missing(ctx)
	if err != nil {
		return targetFailure(err)
	}
	// Room for the NAR plus the database: 10% and 64 MiB of margin.
	free := j.state.Free
	if need := bytes + bytes/10 + 64<<20; len(missing) > 0 && free >= 0 && need > free {
		return &Failure{Section: trouble.DiskSpace,
			Cause:  fmt.Sprintf("not enough disk space on the target's /nix: the copy needs about %s, %s are free", HumanBytes(need), HumanBytes(free)),
			Remedy: "free space on the target (sudo nix-collect-garbage --delete-older-than 30d) or enlarge its disk"}
	}
	if len(missing) == 0 {
		return nil
	}
	f := j.transfer(ctx, bytes)
	if f != nil && f.retry && ctx.Err() == nil {
		// Transient trouble (paths that appeared meanwhile confuse Nix
		// 2.8's daemon; a connection reset): once more, from scratch.
		j.d.Report.Note(j.t.Name, "copy failed ("+f.Cause+"), trying once more")
		f = j.transfer(ctx, bytes)
	}
	if f != nil {
		return f.Failure
	}
	j.res.Copied, j.res.Bytes = len(missing), bytes
	return nil
}

// missing asks the target which paths of the closure it lacks. A valid
// path implies a valid closure in Nix, so a system the target already runs
// or has as its profile needs nothing.
func (j *job) missing(ctx context.Context) (map[string]int64, int64, error) {
	path := j.built.path
	if j.state.Current == path || j.state.Profile == path {
		return nil, 0, nil
	}
	size := j.built.closure
	if size == nil {
		c, err := j.d.Nix.Closures(ctx, []string{path})
		if err != nil {
			return nil, 0, err
		}
		size = c[path]
	}
	var list strings.Builder
	for p := range size {
		list.WriteString(p + "\n")
	}
	out, err := j.sess.Run(ctx, "nix-store --check-validity", "xargs nix-store --check-validity --print-invalid", strings.NewReader(list.String()))
	if err != nil {
		return nil, 0, nixRemoteFailure(err, out.Stderr)
	}
	missing := map[string]int64{}
	var bytes int64
	for _, p := range strings.Fields(out.Stdout) {
		// Only paths we asked about count: the answer is untrusted.
		if n, ok := size[p]; ok && missing[p] == 0 {
			missing[p] = n
			bytes += n
		}
	}
	return missing, bytes, nil
}

func nixRemoteFailure(err error, stderr string) error {
	msg := stderr + " " + err.Error()
	if nix.DaemonMissing(msg) {
		return &target.Error{Section: trouble.TargetSetup, Cause: "the target's nix-daemon is not running",
			Remedy: "start it on the target (systemctl start nix-daemon.socket)", Err: err}
	}
	if te, ok := err.(*target.Error); ok {
		return te
	}
	return &target.Error{Section: trouble.TargetSetup, Cause: "querying the target's Nix store failed: " + target.Clean(strings.Join(target.LastLines(msg, 2), " | "), 300),
		Remedy: "check Nix on the target", Err: err}
}

// copyError is a failed copy, and whether trying again may help.
type copyError struct {
	*Failure
	retry bool
}

// stallTimeout: a copy during which no byte crosses the bridge for this
// long is stopped (the target or Nix hangs).
func (j *job) stallTimeout() time.Duration { return max(j.o.CommandTimeout, 30*time.Second) }

// transfer runs one `nix copy` through a bridge, with progress from the
// bytes that cross it.
func (j *job) transfer(ctx context.Context, total int64) *copyError {
	name := j.t.Name
	j.d.Report.Progress(name, 0, total)
	b, err := j.sess.OpenBridge(ctx, j.o.Daemon)
	if err != nil {
		return &copyError{Failure: &Failure{Section: trouble.Network, Cause: "opening the copy's bridge: " + err.Error(), Remedy: "check this machine's temporary directory", Err: err}}
	}
	defer b.Close()
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stalled := make(chan struct{})
	go func() {
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-cctx.Done():
				return
			case <-tick.C:
				j.d.Report.Progress(name, min(b.Sent(), total), total)
				if b.Idle() > j.stallTimeout() {
					close(stalled)
					cancel()
					return
				}
			}
		}
	}()
	parser := &nix.LogParser{}
	// From this machine's store, or from a build host's (remote.go).
	err = j.copyClosure(cctx, b, nix.CopyOptions{To: b.URI(), Substitute: j.o.Substitute, NoCheckSigs: true}, parser)
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
		return &copyError{Failure: &Failure{Cause: "interrupted", Remedy: "stopped before activation: nothing changed on this target", Err: err}}
	}
	remote, openErr := b.Errors()
	if openErr != nil {
		f := targetFailure(openErr)
		return &copyError{Failure: f, retry: f.Section == trouble.Network}
	}
	var text []string
	for _, e := range parser.Errors() {
		text = append(text, e.Message)
	}
	text = append(text, parser.Plain()...)
	text = append(text, remote...)
	all := strings.Join(text, "\n")
	if dc, ok := j.sess.Conn.(interface{ Dead() error }); ok {
		if d := dc.Dead(); d != nil {
			return &copyError{Failure: connectFailure(d)}
		}
	}
	switch nix.ClassifyStoreError(all) {
	case nix.StoreUntrusted:
		return &copyError{Failure: &Failure{Section: trouble.TrustedUsers, Cause: "the target's Nix refuses unsigned paths from " + j.sess.User,
			Remedy: "deploy through sudo (the default, -daemon=sudo) or make the target trust signed closures (see the guide)", Err: err}}
	case nix.StoreDiskFull:
		return &copyError{Failure: diskFull(err)}
	case nix.StoreDaemonGone:
		// The target's daemon vanished mid-copy: Nix >= 2.34 does that
		// when /nix is full. Ask the target before blaming the network.
		if st, serr := j.sess.ReadState(context.WithoutCancel(ctx)); serr == nil && st.Free >= 0 && st.Free < 32<<20 {
			return &copyError{Failure: diskFull(err)}
		}
		return &copyError{Failure: &Failure{Section: trouble.TargetSetup, Cause: "the target's nix-daemon disconnected during the copy: " + target.Clean(strings.Join(target.LastLines(all, 2), " | "), 300),
			Remedy: "check the target's nix-daemon (journalctl -u nix-daemon) and run again", Err: err}, retry: true}
	}
	return &copyError{Failure: &Failure{Section: trouble.Network, Cause: "nix copy failed: " + target.Clean(strings.Join(target.LastLines(all, 3), " | "), 400),
		Remedy: "check the network and the target's disk and Nix", Err: err}, retry: true}
}

func diskFull(err error) *Failure {
	return &Failure{Section: trouble.DiskSpace, Cause: "the target ran out of disk space during the copy",
		Remedy: "free space on the target (sudo nix-collect-garbage --delete-older-than 30d) or enlarge its disk", Err: err}
}
