package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/monibahmed/nixos-config/internal/testutil"
)

// measured is a mage run with the process's own resource use.
type measured struct {
	testutil.Result       // the first MiB of each output
	StdoutBytes     int64 // all it wrote
	StderrBytes     int64 //
	Wall            time.Duration
	MaxRSS          int64         // bytes, from the kernel's rusage of the process
	CPU             time.Duration // user + system time of the process (and the children it waited for)
	Killed          bool          // the test's time limit ended it
}

// capped keeps the first MiB written and counts the rest.
type capped struct {
	mu sync.Mutex
	b  strings.Builder
	n  int64
}

func (c *capped) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n += int64(len(p))
	if room := 1<<20 - c.b.Len(); room > 0 {
		c.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// mageMeasured runs mage in the fixture's repository; after limit the whole
// process group is killed (the run then counts as failed).
func (f *fixture) mageMeasured(limit time.Duration, args ...string) measured {
	f.t.Helper()
	return runMeasured(f.t, f.repo, limit, args...)
}

// The kernel counts into a process's maximum RSS the memory of the process
// it was exec'd from, and os/exec starts children from this (large) test
// process. So mage is started by a small wrapper, this test binary re-exec'd
// (rusageWrapper), which reports mage's own rusage.
const rusageWrapperEnv = "E2E_RUSAGE_WRAPPER"

// maxAddressSpace caps the address space of a measured run, so that a
// regression cannot take the machine down (4 GiB: far above any bound the
// tests assert).
const maxAddressSpace = 4 << 30

// rusageWrapper runs os.Args[1:] and writes the child's max RSS (bytes) to
// the file named by $E2E_RUSAGE_WRAPPER; its exit code is the child's.
func rusageWrapper() int {
	lim := &syscall.Rlimit{Cur: maxAddressSpace, Max: maxAddressSpace}
	if err := syscall.Setrlimit(syscall.RLIMIT_AS, lim); err != nil {
		fmt.Fprintln(os.Stderr, "rusage wrapper:", err)
		return 125
	}
	cmd := exec.Command(os.Args[1], os.Args[2:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = slices.DeleteFunc(os.Environ(), func(e string) bool { return strings.HasPrefix(e, rusageWrapperEnv+"=") })
	err := cmd.Run()
	if cmd.ProcessState == nil {
		fmt.Fprintln(os.Stderr, "rusage wrapper:", err)
		return 125
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		os.WriteFile(os.Getenv(rusageWrapperEnv), fmt.Appendf(nil, "%d %d", ru.Maxrss*1024, cpu), 0o644)
	}
	return cmd.ProcessState.ExitCode()
}

func runMeasured(t *testing.T, dir string, limit time.Duration, args ...string) measured {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	rusage := filepath.Join(t.TempDir(), "rusage")
	cmd := exec.CommandContext(ctx, self, append([]string{testutil.MageBinary(t)}, args...)...)
	cmd.Env = append(os.Environ(), rusageWrapperEnv+"="+rusage)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var so, se capped
	cmd.Stdout, cmd.Stderr = &so, &se
	start := time.Now()
	err = cmd.Run()
	m := measured{Wall: time.Since(start), Killed: ctx.Err() != nil}
	m.Stdout, m.Stderr, m.StdoutBytes, m.StderrBytes = so.b.String(), se.b.String(), so.n, se.n
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		m.Code = ee.ExitCode()
	case m.Killed:
		m.Code = -1
	default:
		t.Fatalf("running mage %v: %v", args, err)
	}
	if data, err := os.ReadFile(rusage); err == nil {
		var cpu int64
		fmt.Sscanf(string(data), "%d %d", &m.MaxRSS, &cpu)
		m.CPU = time.Duration(cpu)
	} else if !m.Killed {
		t.Errorf("no rusage of mage: %v", err)
	}
	t.Logf("mage %s: exit %d, %v (CPU %v), max RSS %.1f MiB, %d+%d bytes of output%s", strings.Join(args, " "), m.Code, m.Wall.Round(10*time.Millisecond),
		m.CPU.Round(10*time.Millisecond), float64(m.MaxRSS)/(1<<20), m.StdoutBytes, m.StderrBytes, map[bool]string{true: ", KILLED at the test's limit"}[m.Killed])
	return m
}

// bounded asserts that the run ended by itself within wall and used at
// most rssMiB of memory and outKiB of output.
func (m measured) bounded(t *testing.T, wall time.Duration, rssMiB, outKiB int64) {
	t.Helper()
	if m.Killed {
		t.Errorf("did not finish within %v: killed", m.Wall.Round(time.Second))
	} else if m.Wall > wall {
		t.Errorf("took %v, more than %v", m.Wall.Round(10*time.Millisecond), wall)
	}
	if m.MaxRSS > rssMiB<<20 {
		t.Errorf("max RSS %.1f MiB, more than %d MiB", float64(m.MaxRSS)/(1<<20), rssMiB)
	}
	if out := m.StdoutBytes + m.StderrBytes; out > outKiB<<10 {
		t.Errorf("%d bytes of output, more than %d KiB", out, outKiB)
	}
}

// assertNoRawControls fails when text carries a byte of a terminal control
// sequence: ESC, BEL, a C1 control (UTF-8 encoded or raw), or a carriage
// return that does not end a line. Off a terminal the toolkit itself
// writes none.
func assertNoRawControls(t *testing.T, what, text string) {
	t.Helper()
	for i := 0; i < len(text); i++ {
		c := text[i]
		bad := c == 0x1b || c == 0x07 || c == 0x9b || (c == '\r' && (i+1 >= len(text) || text[i+1] != '\n')) ||
			(c == 0xc2 && i+1 < len(text) && text[i+1] >= 0x80 && text[i+1] <= 0x9f)
		if bad {
			lo, hi := max(0, i-60), min(len(text), i+60)
			t.Errorf("%s carries a raw control byte 0x%02x at %d: %q", what, c, i, text[lo:hi])
			return
		}
	}
}
