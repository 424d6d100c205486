package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/monibahmed/nixos-config/internal/inventory"
	"github.com/monibahmed/nixos-config/internal/lab"
	"github.com/monibahmed/nixos-config/internal/nix"
	"github.com/monibahmed/nixos-config/internal/run"
)

// Config of a benchmark run.
type Config struct {
	Root    string // the repository
	MageBin string // compiled magefiles (the CLI users run)
	Fleet   []int  // fleet sizes, e.g. 1, 4, 8
	Runs    int    // runs per figure (median reported)
	Profile Profile
	Out     io.Writer // progress lines
	// Lab name and subnet (a /24 of its own).
	LabName string
	Subnet  string
}

// Stat is a median with its range.
type Stat struct {
	Median float64   `json:"median"`
	Min    float64   `json:"min"`
	Max    float64   `json:"max"`
	Runs   []float64 `json:"runs"`
}

func stat(v []float64) Stat {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s) == 0 {
		return Stat{}
	}
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return Stat{Median: m, Min: s[0], Max: s[len(s)-1], Runs: v}
}

// FleetResult is one fleet size.
type FleetResult struct {
	N                 int     `json:"n"`
	Mage              Stat    `json:"mageSeconds"`
	Baseline          Stat    `json:"baselineSeconds"`
	MageBytes         int64   `json:"mageBytes"`
	BaselineBytes     int64   `json:"baselineBytes"`
	LowerBound        float64 `json:"lowerBoundSeconds"`
	MageEvaluators    int     `json:"mageEvaluators"`
	BaselineEvaluator int     `json:"baselineEvaluators"`
	SSHPerTarget      float64 `json:"sshConnectionsPerTarget"`
	// Ceiling: n bare `nix copy` at once over the same links: the fastest
	// this lab takes n closures. The simulated targets' sshd and nix-daemon
	// run on this machine's cores, so it can exceed the network bound.
	Ceiling float64 `json:"labCeilingSeconds"`
	// Eval: one `nix build` of the n systems, already built: the
	// evaluation deployAll does and the ceiling does not.
	Eval float64 `json:"evaluationSeconds"`
	// Load: the busiest of the measurements (deployAll, sequential, ceiling).
	Load Load `json:"load"`
}

// Report of a whole benchmark.
type Report struct {
	Date      string        `json:"date"`
	Machine   Machine       `json:"machine"`
	Profile   Profile       `json:"profile"`
	DelayNote string        `json:"delayNote,omitempty"`
	Runs      int           `json:"runs"`
	Fleet     []FleetResult `json:"fleet"`
	NoopMage  Stat          `json:"noopMageSeconds"`
	NoopRaw   Stat          `json:"noopRawSeconds"`
	Discover  Stat          `json:"discoverSeconds"`
	Nmap      Stat          `json:"nmapSeconds"`
	NmapFound int           `json:"nmapHosts"`
	// SSHCPU is the CPU time (all processes) one closure's bytes cost
	// through OpenSSH alone (ssh target 'cat > /dev/null').
	SSHCPU    float64 `json:"sshCpuSecondsPerClosure"`
	MageFound int     `json:"discoverHosts"`
	TotalSecs float64 `json:"totalSeconds"`
	// Copy: one closure copied by each transport and trust mechanism.
	Copy      []CopyResult `json:"copy"`
	CopyBytes int64        `json:"copyBytes"`
	// Load: the busiest measurement of the whole run.
	Load Load `json:"load"`
}

// Machine facts.
type Machine struct {
	Cores  int    `json:"cores"`
	Memory string `json:"memory"`
	Nix    string `json:"nix"`
	Kernel string `json:"kernel"`
	Go     string `json:"go"`
}

func machine(ctx context.Context) Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version()}
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(l, "MemTotal:") {
				f := strings.Fields(l)
				if kb, err := strconv.Atoi(f[1]); err == nil {
					m.Memory = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
				}
			}
		}
	}
	if out, err := exec.CommandContext(ctx, "nix", "--version").Output(); err == nil {
		m.Nix = strings.TrimSpace(string(out))
	}
	if out, err := exec.CommandContext(ctx, "uname", "-r").Output(); err == nil {
		m.Kernel = strings.TrimSpace(string(out))
	}
	return m
}

type runner struct {
	cfg     Config
	fleet   string // generated repository
	shimBin string
	shimLog string
	ex      run.Exec
	delay   string
}

func (r *runner) logf(format string, args ...any) {
	if r.cfg.Out != nil {
		fmt.Fprintf(r.cfg.Out, "%s bench: %s\n", time.Now().UTC().Format("15:04:05"), fmt.Sprintf(format, args...))
	}
}

// Run performs the benchmark.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	start := time.Now()
	if cfg.Runs < 1 {
		cfg.Runs = 1
	}
	if cfg.LabName == "" {
		cfg.LabName = "bn"
	}
	if cfg.Subnet == "" {
		cfg.Subnet = "10.77.80.0/24"
	}
	maxN := 1
	for _, n := range cfg.Fleet {
		if n > maxN {
			maxN = n
		}
	}
	work, err := os.MkdirTemp("", "nixos-config-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	r := &runner{cfg: cfg, fleet: filepath.Join(work, "fleet")}
	if r.shimBin, r.shimLog, err = nixShim(work); err != nil {
		return nil, err
	}
	seed := time.Now().UTC().Format("20060102T150405")
	if err := makeFleet(ctx, cfg.Root, r.fleet, maxN, cfg.Profile, seed); err != nil {
		return nil, err
	}
	rep := &Report{Date: time.Now().UTC().Format(time.RFC3339), Machine: machine(ctx), Profile: cfg.Profile, Runs: cfg.Runs}

	// Build every system once so that both sides start with a warm store.
	r.logf("building %d systems (%s)", maxN, cfg.Profile)
	if _, err := r.build(ctx, names(maxN)); err != nil {
		return nil, err
	}

	for _, n := range cfg.Fleet {
		fr := FleetResult{N: n}
		var mageT, baseT []float64
		for i := 0; i < cfg.Runs; i++ {
			m, err := r.fleetRun(ctx, n, true)
			if err != nil {
				return nil, fmt.Errorf("deployAll, %d targets: %w", n, err)
			}
			mageT = append(mageT, m.seconds)
			fr.MageBytes, fr.MageEvaluators, fr.SSHPerTarget = m.bytes, m.evaluators, m.sshPerTarget
			fr.Load = worst(fr.Load, m.load)
			b, err := r.fleetRun(ctx, n, false)
			if err != nil {
				return nil, fmt.Errorf("baseline, %d targets: %w", n, err)
			}
			baseT = append(baseT, b.seconds)
			fr.Load = worst(fr.Load, b.load)
			fr.BaselineBytes, fr.BaselineEvaluator = b.bytes, b.evaluators
			r.logf("N=%d run %d: deployAll %.2fs, sequential %.2fs", n, i+1, m.seconds, b.seconds)
		}
		fr.Mage, fr.Baseline = stat(mageT), stat(baseT)
		fr.LowerBound = lowerBound(n, cfg.Profile)
		var cl Load
		if fr.Ceiling, fr.Eval, cl, err = r.ceiling(ctx, n); err != nil {
			return nil, fmt.Errorf("lab ceiling, %d targets: %w", n, err)
		}
		fr.Load = worst(fr.Load, cl)
		r.logf("N=%d: %d bare nix copy at once over the same links take %.2fs (%s); evaluating the %d systems %.2fs", n, n, fr.Ceiling, fr.Load, n, fr.Eval)
		rep.Fleet = append(rep.Fleet, fr)
		rep.Load = worst(rep.Load, fr.Load)
	}
	if err := r.copyMethods(ctx, rep); err != nil {
		return nil, fmt.Errorf("copy throughput: %w", err)
	}
	for _, c := range rep.Copy {
		rep.Load = worst(rep.Load, c.Load)
	}
	if rep.SSHCPU, err = r.sshCost(ctx); err != nil {
		return nil, fmt.Errorf("SSH cost: %w", err)
	}
	r.logf("moving one closure's bytes through OpenSSH costs %.2f CPU-seconds on this machine", rep.SSHCPU)
	if err := r.noop(ctx, rep); err != nil {
		return nil, fmt.Errorf("no-op redeploy: %w", err)
	}
	if err := r.discovery(ctx, rep, maxN); err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	rep.DelayNote = r.delay
	rep.TotalSecs = time.Since(start).Seconds()
	return rep, nil
}

func names(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("node-%d", i+1)
	}
	return out
}

// lowerBound: every target must receive its whole closure through its own
// link, and all of them through the shared uplink.
func lowerBound(n int, p Profile) float64 {
	per := float64(p.SharedMiB+p.UniqueMiB) * (1 << 20) * 8
	t := per / (float64(p.TargetMbit) * 1e6)
	if up := float64(n) * per / (float64(p.UplinkMbit) * 1e6); up > t {
		t = up
	}
	return t
}

func (r *runner) newLab(ctx context.Context, n int, extras bool) (*lab.Lab, error) {
	return r.newLabShaped(ctx, n, extras, true)
}

func (r *runner) newLabShaped(ctx context.Context, n int, extras, shaped bool) (*lab.Lab, error) {
	state := filepath.Join(r.fleet, ".lab")
	l, err := lab.Start(ctx, lab.Config{Name: r.cfg.LabName, StateDir: state, Subnet: r.cfg.Subnet, Targets: names(n), Extras: extras}, r.ex)
	if err != nil {
		return nil, err
	}
	// The baseline (the old scripts: nix copy over ssh-ng://) needs the
	// deploy user trusted; lab targets trust only root by default.
	for _, name := range names(n) {
		if err := l.TrustUser(ctx, name, true); err != nil {
			l.Down(context.Background())
			return nil, err
		}
	}
	if !shaped {
		return l, nil
	}
	p := r.cfg.Profile
	for _, name := range names(n) {
		link := lab.Link{RateMbit: p.TargetMbit, DelayMs: p.DelayMs}
		if err := l.Shape(ctx, name, link); err != nil {
			if !errors.Is(err, lab.ErrNoNetem) {
				l.Down(context.Background())
				return nil, err
			}
			r.delay = fmt.Sprintf("the %d ms link delay was not simulated: %v", p.DelayMs, lab.ErrNoNetem)
			link.DelayMs = 0
			if err := l.Shape(ctx, name, link); err != nil {
				l.Down(context.Background())
				return nil, err
			}
		}
	}
	if err := l.ShapeUplink(ctx, p.UplinkMbit); err != nil {
		l.Down(context.Background())
		return nil, err
	}
	return l, nil
}

// counters reads bytes received and SSH connections accepted per target.
func counters(ctx context.Context, l *lab.Lab, n int) (int64, map[string]int) {
	var bytes int64
	conns := map[string]int{}
	for _, name := range names(n) {
		out, err := l.Exec(ctx, name, "sh", "-c", "cat /sys/class/net/eth0/statistics/rx_bytes; grep -c 'Connection from' /var/lib/lab/sshd.log || true")
		if err != nil {
			continue
		}
		f := strings.Fields(out)
		if len(f) >= 2 {
			b, _ := strconv.ParseInt(f[0], 10, 64)
			c, _ := strconv.Atoi(f[1])
			bytes += b
			conns[name] = c
		}
	}
	return bytes, conns
}

type fleetOutcome struct {
	seconds      float64
	bytes        int64
	evaluators   int
	sshPerTarget float64
	load         Load
}

// fleetRun deploys n fresh targets with mage deployAll or with the
// sequential baseline.
func (r *runner) fleetRun(ctx context.Context, n int, mage bool) (fleetOutcome, error) {
	var out fleetOutcome
	l, err := r.newLab(ctx, n, false)
	if err != nil {
		return out, err
	}
	defer l.Down(context.Background())
	bytes0, conns0 := counters(ctx, l, n)
	_, from := evaluators(r.shimLog, 0)
	start := time.Now()
	out.load, err = measure(func() error {
		if mage {
			return r.mage(ctx, "deployAll", "-lab", fmt.Sprintf("-jobs=%d", n))
		}
		return r.sequential(ctx, l, n)
	})
	out.seconds = time.Since(start).Seconds()
	if err != nil {
		return out, err
	}
	bytes1, conns1 := counters(ctx, l, n)
	out.bytes = bytes1 - bytes0
	out.evaluators, _ = evaluators(r.shimLog, from)
	total := 0
	for k, v := range conns1 {
		total += v - conns0[k]
	}
	out.sshPerTarget = float64(total) / float64(n)
	// Every target must run its system.
	for _, name := range names(n) {
		cur, err := l.Exec(ctx, name, "readlink", "/run/current-system")
		if err != nil || !strings.Contains(cur, "-nixos-system-"+name+"-") {
			return out, fmt.Errorf("%s does not run its system after the deploy (%q)", name, strings.TrimSpace(cur))
		}
	}
	return out, nil
}

func (r *runner) env() []string {
	return []string{"PATH=" + r.shimBin + ":" + os.Getenv("PATH")}
}

func (r *runner) mage(ctx context.Context, args ...string) error {
	var buf bytes.Buffer
	err := r.ex.Run(ctx, run.Cmd{Name: r.cfg.MageBin, Args: args, Dir: r.fleet, Env: r.env(), Stdout: &buf, Stderr: &buf})
	if err != nil {
		return fmt.Errorf("mage %s: %w\n%s", strings.Join(args, " "), err, buf.String())
	}
	return nil
}

func (r *runner) sshOpts() []string {
	state := filepath.Join(r.fleet, ".lab")
	return []string{"-o", "UserKnownHostsFile=" + filepath.Join(state, "known_hosts"), "-o", "StrictHostKeyChecking=yes",
		"-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i", filepath.Join(state, "id_ed25519")}
}

// build builds systems one `nix build` per call.
func (r *runner) build(ctx context.Context, targets []string) ([]string, error) {
	f := nix.Flake{Dir: r.fleet, Nixpkgs: filepath.Join(r.fleet, nix.DoubleDir)}
	n := nix.Nix{Runner: r.ex, Bin: filepath.Join(r.shimBin, "nix")}
	attrs := make([]string, len(targets))
	for i, t := range targets {
		attrs[i] = nix.Toplevel(t)
	}
	p := &nix.LogParser{}
	paths, err := n.Build(ctx, f, attrs, p)
	if err != nil {
		return nil, fmt.Errorf("nix build: %v %v", err, p.Errors())
	}
	return paths, nil
}

// sequential is the baseline: per target, one after another, what the old
// deploy scripts did: evaluate and build its system, nix copy it, activate
// it over SSH.
func (r *runner) sequential(ctx context.Context, l *lab.Lab, n int) error {
	inv, err := inventory.LoadFile(l.InventoryPath())
	if err != nil {
		return err
	}
	for _, t := range inv.Targets {
		paths, err := r.build(ctx, []string{t.Name})
		if err != nil {
			return err
		}
		if err := r.rawDeploy(ctx, t, paths[0]); err != nil {
			return err
		}
	}
	return nil
}

// rawDeploy: nix copy, then one SSH command that sets the profile and switches.
func (r *runner) rawDeploy(ctx context.Context, t inventory.Target, path string) error {
	var buf bytes.Buffer
	err := r.ex.Run(ctx, run.Cmd{Name: "nix", Args: append(nix.GlobalArgs(false), "copy", "--no-check-sigs",
		"--to", "ssh-ng://"+t.User+"@"+t.Address, path),
		Env: append(r.env(), "NIX_SSHOPTS="+strings.Join(r.sshOpts(), " ")), Stdout: &buf, Stderr: &buf})
	if err != nil {
		return fmt.Errorf("nix copy to %s: %w %s", t.Name, err, buf.String())
	}
	activate := fmt.Sprintf("sudo nix-env -p /nix/var/nix/profiles/system --set %s && sudo %s/bin/switch-to-configuration switch", run.Quote(path), run.Quote(path))
	args := append(r.sshOpts(), t.User+"@"+t.Address, activate)
	if err := r.ex.Run(ctx, run.Cmd{Name: "ssh", Args: args, Stdout: &buf, Stderr: &buf}); err != nil {
		return fmt.Errorf("activating %s: %w %s", t.Name, err, buf.String())
	}
	return nil
}

// ceiling copies n closures at once with bare nix copy over the profile's
// links: the same transfers as a deployment with no tool around them.
// It also returns how long evaluating the (already built) systems takes.
func (r *runner) ceiling(ctx context.Context, n int) (float64, float64, Load, error) {
	l, err := r.newLab(ctx, n, false)
	if err != nil {
		return 0, 0, Load{}, err
	}
	defer l.Down(context.Background())
	t0 := time.Now()
	paths, err := r.build(ctx, names(n))
	if err != nil {
		return 0, 0, Load{}, err
	}
	eval := time.Since(t0).Seconds()
	inv, err := inventory.LoadFile(l.InventoryPath())
	if err != nil {
		return 0, 0, Load{}, err
	}
	start := time.Now()
	load, err := measure(func() error {
		errs := make(chan error, n)
		for i, t := range inv.Targets {
			go func() {
				var buf bytes.Buffer
				errs <- r.ex.Run(ctx, run.Cmd{Name: "nix", Args: append(nix.GlobalArgs(false), "copy", "--no-check-sigs",
					"--to", "ssh-ng://"+t.User+"@"+t.Address, paths[i]),
					Env: []string{"NIX_SSHOPTS=" + strings.Join(r.sshOpts(), " ")}, Stdout: &buf, Stderr: &buf})
			}()
		}
		var first error
		for range inv.Targets {
			if err := <-errs; err != nil && first == nil {
				first = err
			}
		}
		return first
	})
	return time.Since(start).Seconds(), eval, load, err
}

// cpuSeconds is the machine's busy CPU time so far (from /proc/stat).
func cpuSeconds() float64 {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	f := strings.Fields(strings.SplitN(string(data), "\n", 2)[0])
	var busy float64
	for i, v := range f[1:] {
		n, _ := strconv.ParseFloat(v, 64)
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy / 100 // USER_HZ
}

// sshCost pipes one closure's worth of bytes through ssh into cat on a lab
// target and returns the CPU time the machine spent (the median of 3).
func (r *runner) sshCost(ctx context.Context) (float64, error) {
	l, err := r.newLabShaped(ctx, 1, false, false)
	if err != nil {
		return 0, err
	}
	defer l.Down(context.Background())
	inv, err := inventory.LoadFile(l.InventoryPath())
	if err != nil {
		return 0, err
	}
	t := inv.Targets[0]
	size := int64(r.cfg.Profile.SharedMiB+r.cfg.Profile.UniqueMiB) << 20
	var costs []float64
	for i := 0; i < 3; i++ {
		// Without the connection setup: subtract an empty session.
		c0 := cpuSeconds()
		if err := r.ex.Run(ctx, run.Cmd{Name: "ssh", Args: append(r.sshOpts(), t.User+"@"+t.Address, "true")}); err != nil {
			return 0, err
		}
		c1 := cpuSeconds()
		err := r.ex.Run(ctx, run.Cmd{Name: "ssh", Args: append(r.sshOpts(), t.User+"@"+t.Address, "cat > /dev/null"),
			Stdin: io.LimitReader(zeros{}, size)})
		if err != nil {
			return 0, err
		}
		c2 := cpuSeconds()
		costs = append(costs, (c2-c1)-(c1-c0))
	}
	return stat(costs).Median, nil
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// noop measures redeploying an up-to-date target: mage deploy against the
// bare commands (a nix copy that copies nothing, and the SSH activation).
func (r *runner) noop(ctx context.Context, rep *Report) error {
	l, err := r.newLab(ctx, 1, false)
	if err != nil {
		return err
	}
	defer l.Down(context.Background())
	if err := r.mage(ctx, "deploy", "node-1", "-", "-lab"); err != nil {
		return err
	}
	paths, err := r.build(ctx, []string{"node-1"})
	if err != nil {
		return err
	}
	inv, err := inventory.LoadFile(l.InventoryPath())
	if err != nil {
		return err
	}
	t, _ := inv.Get("node-1")
	var m, raw []float64
	runs := max(r.cfg.Runs, 3)
	for i := 0; i < runs; i++ {
		s := time.Now()
		if err := r.mage(ctx, "deploy", "node-1", "-", "-lab"); err != nil {
			return err
		}
		m = append(m, time.Since(s).Seconds())
		s = time.Now()
		if err := r.rawDeploy(ctx, t, paths[0]); err != nil {
			return err
		}
		raw = append(raw, time.Since(s).Seconds())
	}
	rep.NoopMage, rep.NoopRaw = stat(m), stat(raw)
	r.logf("no-op redeploy: mage %.2fs, bare commands %.2fs", rep.NoopMage.Median, rep.NoopRaw.Median)
	return nil
}

// discovery compares mage discover:subnet with nmap -p22 --open on the lab subnet.
func (r *runner) discovery(ctx context.Context, rep *Report, n int) error {
	l, err := r.newLab(ctx, n, true)
	if err != nil {
		return err
	}
	defer l.Down(context.Background())
	var d, nm []float64
	for i := 0; i < max(r.cfg.Runs, 3); i++ {
		s := time.Now()
		var buf bytes.Buffer
		if err := r.ex.Run(ctx, run.Cmd{Name: r.cfg.MageBin, Args: []string{"discover:subnet", r.cfg.Subnet, "-lab", "-json"}, Dir: r.fleet, Stdout: &buf}); err != nil {
			return err
		}
		d = append(d, time.Since(s).Seconds())
		var res struct {
			Hosts []json.RawMessage `json:"hosts"`
		}
		_ = json.Unmarshal(buf.Bytes(), &res)
		rep.MageFound = len(res.Hosts)

		s = time.Now()
		buf.Reset()
		// -n: no DNS lookups (no query may leave the lab).
		if err := r.ex.Run(ctx, run.Cmd{Name: "nmap", Args: []string{"-n", "-p22", "--open", r.cfg.Subnet}, Stdout: &buf, Stderr: &buf}); err != nil {
			// nmap's list of interfaces, read once at its start, can miss
			// the lab's just-made bridge ("route_dst_netlink: can't find
			// interface"): once more, timed afresh.
			r.logf("discovery: nmap failed (%v: %s); once more", err, strings.TrimSpace(buf.String()))
			time.Sleep(time.Second)
			s = time.Now()
			buf.Reset()
			if err := r.ex.Run(ctx, run.Cmd{Name: "nmap", Args: []string{"-n", "-p22", "--open", r.cfg.Subnet}, Stdout: &buf, Stderr: &buf}); err != nil {
				return fmt.Errorf("nmap -n -p22 --open %s: %w: %s", r.cfg.Subnet, err, strings.TrimSpace(buf.String()))
			}
		}
		nm = append(nm, time.Since(s).Seconds())
		rep.NmapFound = strings.Count(buf.String(), "22/tcp open")
	}
	rep.Discover, rep.Nmap = stat(d), stat(nm)
	r.logf("discovery: mage %.2fs (%d hosts), nmap %.2fs (%d hosts)", rep.Discover.Median, rep.MageFound, rep.Nmap.Median, rep.NmapFound)
	return nil
}
