package deploy

import (
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/monibahmed/nixos-config/internal/trouble"
	"github.com/monibahmed/nixos-config/internal/ui"
)

// Stage is a step of a target's deployment (see pipeline in deploy.go).
type Stage string

// Stages of a target's deployment.
const (
	StagePreflight Stage = "preflight"
	StageBuild     Stage = "build"
	StageCopy      Stage = "copy"
	StageActivate  Stage = "activate"
	StageVerify    Stage = "verify"
	StageHealth    Stage = "health"
)

// Status is a target's result.
type Status string

// Results of a target.
const (
	StatusOK          Status = "ok"
	StatusFailed      Status = "failed"
	StatusSkipped     Status = "skipped"
	StatusInterrupted Status = "interrupted"
	StatusRolledBack  Status = "rolled back"
)

// SharedBuild is the name notes about the fleet's shared build go under
// (Reporter.Note): no target's name (a target may be called "build").
const SharedBuild = "\x00build"

// rowName is how a note's name prints.
func rowName(name string) string {
	if name == SharedBuild {
		return "build"
	}
	return name
}

// Reporter shows progress.
type Reporter interface {
	Stage(target string, stage Stage)
	// Progress of the current stage: done/total in unit ("B" bytes, "paths").
	Progress(target string, done, total int64)
	// BuildProgress of the shared build (derivations).
	BuildProgress(done, total int)
	// BuildFinished: the shared build is over (built systems, failed ones).
	BuildFinished(ok, failed int)
	// RemoteBuild is the progress of a target's build on another machine
	// (host: the target itself or its build host), in derivations.
	RemoteBuild(target, host string, done, total int)
	Note(target, msg string)
	Finished(r Result)
	// Pause stops drawing (for a password prompt) until resume is called.
	Pause() (resume func())
}

// Result of one target.
type Result struct {
	Target     string
	Address    string
	Status     Status
	Generation int
	System     string
	Copied     int
	Bytes      int64
	Duration   time.Duration
	Err        error

	// BuiltOn is where the system was built: local (this machine),
	// target, or the build host's name.
	BuiltOn string
}

// Failure is a failed target: one line naming cause and remedy.
type Failure struct {
	Target  string
	Stage   Stage
	Cause   string
	Remedy  string
	Section string   // of docs/troubleshooting.md
	Detail  []string // e.g. the last output lines of a failed activation
	Err     error
	// Interrupted: stopped by the first interrupt (see interrupted).
	Interrupted bool
}

// stoppedBeforeActivation is the remedy of a target interrupted before
// its activation started.
const stoppedBeforeActivation = "stopped before activation: nothing changed on this target"

// interrupted is the failure of work the first interrupt stopped (its
// cause reads "interrupted"); err is what the stopped work returned.
func interrupted(remedy string, err error) *Failure {
	return &Failure{Cause: "interrupted", Remedy: remedy, Err: err, Interrupted: true}
}

func (f *Failure) Error() string {
	s := f.Target + ": " + string(f.Stage) + ": " + f.Cause
	if f.Remedy != "" {
		s += ": " + f.Remedy
	}
	if f.Section != "" {
		s += " (" + trouble.See(f.Section) + ")"
	}
	return s
}

func (f *Failure) Unwrap() error { return f.Err }

// HumanBytes formats a byte count.
func HumanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// WriteSummary prints the table of results and one line per failure.
func WriteSummary(w io.Writer, p *ui.Printer, results []Result) error {
	var rows [][]string
	for _, r := range results {
		gen := "-"
		if r.Generation > 0 {
			gen = strconv.Itoa(r.Generation)
		}
		status := string(r.Status)
		switch r.Status {
		case StatusOK:
			status = p.OK(status)
		case StatusFailed, StatusInterrupted, StatusRolledBack:
			status = p.Bad(status)
		default:
			status = p.Warning(status)
		}
		built := r.BuiltOn
		if built == "" {
			built = "-"
		}
		rows = append(rows, []string{r.Target, r.Address, status, gen, built, r.Duration.Round(100 * time.Millisecond).String()})
	}
	if err := ui.Table(w, []string{"TARGET", "ADDRESS", "RESULT", "GENERATION", "BUILT ON", "DURATION"}, rows); err != nil {
		return err
	}
	for _, r := range results {
		if r.Err == nil {
			continue
		}
		fmt.Fprintf(w, "%s %v\n", p.Bad("✗"), r.Err)
		if f, ok := r.Err.(*Failure); ok && len(f.Detail) > 0 {
			for _, d := range f.Detail {
				fmt.Fprintf(w, "    %s\n", d)
			}
		}
	}
	return nil
}

// FailedNames lists the targets that did not succeed.
func FailedNames(results []Result) []string {
	var out []string
	for _, r := range results {
		if r.Status != StatusOK {
			out = append(out, r.Target)
		}
	}
	return out
}

// PlainReporter writes one timestamped line per event (no escape codes).
type PlainReporter struct {
	P *ui.Printer

	mu         sync.Mutex
	lastBuild  int
	lastCopy   map[string]time.Time
	lastDone   map[string]int64
	lastRemote map[string]int
}

// Stage implements Reporter.
func (r *PlainReporter) Stage(target string, stage Stage) { r.P.Linef("%s: %s", target, stage) }

// Progress implements Reporter (at most one line every 2 seconds per target).
func (r *PlainReporter) Progress(target string, done, total int64) {
	r.mu.Lock()
	if r.lastCopy == nil {
		r.lastCopy, r.lastDone = map[string]time.Time{}, map[string]int64{}
	}
	last := r.lastCopy[target]
	prev, seen := r.lastDone[target]
	if (seen && prev == done) || (done != 0 && done != total && time.Since(last) < 2*time.Second) {
		r.mu.Unlock()
		return
	}
	r.lastCopy[target], r.lastDone[target] = time.Now(), done
	r.mu.Unlock()
	r.P.Linef("%s: copy %s / %s", target, HumanBytes(done), HumanBytes(total))
}

// BuildProgress implements Reporter.
func (r *PlainReporter) BuildProgress(done, total int) {
	r.mu.Lock()
	if total == 0 || done <= r.lastBuild {
		r.mu.Unlock()
		return
	}
	r.lastBuild = done
	r.mu.Unlock()
	r.P.Linef("build: %d/%d derivations built", done, total)
}

// RemoteBuild implements Reporter (a line when a derivation is done).
func (r *PlainReporter) RemoteBuild(target, host string, done, total int) {
	r.mu.Lock()
	if r.lastRemote == nil {
		r.lastRemote = map[string]int{}
	}
	prev, seen := r.lastRemote[target]
	if total == 0 || (seen && done <= prev) {
		r.mu.Unlock()
		return
	}
	r.lastRemote[target] = done
	r.mu.Unlock()
	r.P.Linef("%s: build on %s: %d/%d derivations built", target, host, done, total)
}

// BuildFinished implements Reporter.
func (r *PlainReporter) BuildFinished(ok, failed int) {
	if failed > 0 {
		r.P.Linef("build: %d systems ready, %s", ok, r.P.Bad(fmt.Sprintf("%d failed", failed)))
		return
	}
	r.P.Linef("build: %d systems ready", ok)
}

// Note implements Reporter.
func (r *PlainReporter) Note(target, msg string) { r.P.Linef("%s: %s", rowName(target), msg) }

// Finished implements Reporter.
func (r *PlainReporter) Finished(res Result) {
	switch res.Status {
	case StatusOK:
		gen := ""
		if res.Generation > 0 {
			gen = fmt.Sprintf(", generation %d", res.Generation)
		}
		r.P.Linef("%s: %s (%d paths copied, %s%s, %s)", res.Target, r.P.OK("ok"), res.Copied, HumanBytes(res.Bytes), gen, res.Duration.Round(100*time.Millisecond))
	default:
		r.P.Linef("%s: %s: %v", res.Target, r.P.Bad(string(res.Status)), res.Err)
	}
}

// Pause implements Reporter.
func (r *PlainReporter) Pause() func() { return func() {} }

// BoardReporter draws progress bars on a terminal: one for the fleet and
// one per target showing its stage (build and copy progress from Nix).
type BoardReporter struct {
	B     *ui.Board
	P     *ui.Printer
	Total int

	mu       sync.Mutex
	finished int
	final    map[string]string // finished targets' lines
}

const fleetKey = "\x00fleet"

// NewBoardReporter starts the display for targets.
func NewBoardReporter(b *ui.Board, p *ui.Printer, targets []string) *BoardReporter {
	r := &BoardReporter{B: b, P: p, Total: len(targets)}
	b.Bar(fleetKey, "fleet  ", int64(len(targets)), false)
	b.Bar(SharedBuild, "build  ", -1, false)
	for _, t := range targets {
		b.Text(t, fmt.Sprintf("%-16s waiting", t))
	}
	return r
}

// Stage implements Reporter.
func (r *BoardReporter) Stage(target string, stage Stage) {
	if stage == StageCopy {
		return // the copy bar appears with its first progress
	}
	r.B.Bar(target, fmt.Sprintf("%-16s %-9s", target, stage), -1, false)
}

// Progress implements Reporter.
func (r *BoardReporter) Progress(target string, done, total int64) {
	if done == 0 {
		r.B.Bar(target, fmt.Sprintf("%-16s %-9s", target, StageCopy), total, true)
	}
	r.B.Set(target, done)
}

// BuildProgress implements Reporter.
func (r *BoardReporter) BuildProgress(done, total int) {
	if total > 0 {
		r.B.Bar(SharedBuild, "build  ", int64(total), false)
		r.B.Set(SharedBuild, int64(done))
	}
}

// RemoteBuild implements Reporter: the target's bar counts derivations.
func (r *BoardReporter) RemoteBuild(target, host string, done, total int) {
	if total <= 0 {
		return
	}
	r.B.Bar(target, fmt.Sprintf("%-16s %-9s", target, truncate("build@"+host, 9)), int64(total), false)
	r.B.Set(target, int64(done))
}

// BuildFinished implements Reporter.
func (r *BoardReporter) BuildFinished(ok, failed int) {
	msg := fmt.Sprintf("build   %d systems ready", ok)
	if failed > 0 {
		msg += ", " + r.P.Bad(fmt.Sprintf("%d failed", failed))
	}
	r.B.Text(SharedBuild, msg)
}

// Note implements Reporter: the note replaces the target's line until its
// next stage or progress (lock waits, retries, hook output).
// A note about a finished target (its hook's output) follows its result.
func (r *BoardReporter) Note(target, msg string) {
	r.mu.Lock()
	final, done := r.final[target]
	r.mu.Unlock()
	if done {
		r.B.Text(target, final+"  "+r.P.Warning(truncate(msg, 80)))
		return
	}
	r.B.Text(target, fmt.Sprintf("%-16s %s", rowName(target), r.P.Warning(truncate(msg, 100))))
}

func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// Finished implements Reporter.
func (r *BoardReporter) Finished(res Result) {
	r.mu.Lock()
	r.finished++
	n := r.finished
	r.mu.Unlock()
	r.B.Set(fleetKey, int64(n))
	state := r.P.OK("ok")
	if res.Status != StatusOK {
		state = r.P.Bad(string(res.Status))
	}
	line := fmt.Sprintf("%-16s %s %s", res.Target, state, res.Duration.Round(100*time.Millisecond))
	r.mu.Lock()
	if r.final == nil {
		r.final = map[string]string{}
	}
	r.final[res.Target] = line
	r.mu.Unlock()
	r.B.Text(res.Target, line)
}

// Pause implements Reporter.
func (r *BoardReporter) Pause() func() { return r.B.Pause() }
