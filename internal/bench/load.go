package bench

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Load is what else ran on the machine during a measurement: the load
// average at its end and the CPU time of processes that are not this
// benchmark's (not its descendants: the lab's hosts, sshd and nix-daemons
// are its descendants and part of what is measured).
type Load struct {
	Average    float64 `json:"loadAverage"`
	ForeignCPU float64 `json:"otherProcessesCpuSeconds"`
	Seconds    float64 `json:"seconds"`
}

// Busy tells whether the figures were taken under load: other processes
// used more than a tenth of one core on average.
func (l Load) Busy() bool { return l.Seconds > 0 && l.ForeignCPU/l.Seconds > 0.1 }

func (l Load) String() string {
	s := fmt.Sprintf("load %.2f, other processes %.2f CPU-s", l.Average, l.ForeignCPU)
	if l.Busy() {
		s += " (UNDER LOAD)"
	}
	return s
}

// worst keeps the busier of two loads.
func worst(a, b Load) Load {
	if b.Seconds > 0 && (a.Seconds == 0 || b.ForeignCPU/b.Seconds > a.ForeignCPU/a.Seconds) {
		return b
	}
	return a
}

// cpuSnapshot is the CPU time (in ticks) of every process not descending
// from this one.
type cpuSnapshot map[int]int64

type procInfo struct {
	ppid  int
	ticks int64
}

func processes() map[int]procInfo {
	out := map[int]procInfo{}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(data)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 13 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		utime, _ := strconv.ParseInt(f[11], 10, 64)
		stime, _ := strconv.ParseInt(f[12], 10, 64)
		out[pid] = procInfo{ppid: ppid, ticks: utime + stime}
	}
	return out
}

// foreign takes a snapshot of the processes that are not ours.
func foreign() cpuSnapshot {
	procs := processes()
	self := os.Getpid()
	ours := func(pid int) bool {
		for i := 0; i < 64 && pid > 1; i++ {
			if pid == self {
				return true
			}
			pid = procs[pid].ppid
		}
		return false
	}
	snap := cpuSnapshot{}
	for pid, p := range procs {
		if !ours(pid) {
			snap[pid] = p.ticks
		}
	}
	return snap
}

// since is the CPU time (seconds) other processes used since s.
func (s cpuSnapshot) since() float64 {
	now := foreign()
	var ticks int64
	for pid, t := range now {
		ticks += t - s[pid] // new processes: all their time
	}
	return float64(ticks) / 100 // USER_HZ
}

func loadAverage() float64 {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(data))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// measure runs f and reports what else ran meanwhile.
func measure(f func() error) (Load, error) {
	snap := foreign()
	start := nowSeconds()
	err := f()
	return Load{Average: loadAverage(), ForeignCPU: snap.since(), Seconds: nowSeconds() - start}, err
}
