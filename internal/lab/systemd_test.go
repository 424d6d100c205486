package lab

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/monibahmed/nixos-config/internal/run"
	"github.com/monibahmed/nixos-config/internal/testutil"
)

func TestDebianSuite(t *testing.T) {
	for _, c := range []struct{ osRelease, version, want string }{
		{"ID=debian\nVERSION_CODENAME=bookworm\n", "12.10\n", "bookworm"},
		{`ID="debian"` + "\nVERSION_CODENAME=trixie\n", "13.1\n", "trixie"},
		{"ID=debian\nVERSION_CODENAME=forky\n", "forky/sid\n", "sid"},
		{"ID=debian\n", "trixie/sid\n", "sid"},
		{"ID=debian\nVERSION_CODENAME=$(id)\n", "12\n", "stable"},
		{"ID=ubuntu\nVERSION_CODENAME=noble\n", "trixie/sid\n", "stable"},
	} {
		if got := debianSuite(c.osRelease, c.version); got != c.want {
			t.Errorf("debianSuite(%q, %q) = %q, want %q", c.osRelease, c.version, got, c.want)
		}
	}
	if rootKey("bookworm") == rootKey("trixie") || !strings.HasPrefix(rootKey("sid"), "debian-sid-") {
		t.Errorf("root keys: %s %s", rootKey("bookworm"), rootKey("sid"))
	}
}

func TestDebianMirror(t *testing.T) {
	for _, c := range []struct {
		sources []string
		want    string
	}{
		{[]string{"Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm\n"}, "http://deb.debian.org/debian"},
		{[]string{"deb [signed-by=/k.gpg] http://mirror.example/debian/ trixie main\n"}, "http://mirror.example/debian"},
		{[]string{"deb http://security.debian.org/debian-security bookworm-security main\n", "URIs: https://m.example/debian\n"}, "https://m.example/debian"},
		{[]string{"deb https://packages.cloud.google.com/apt cloud-sdk main\n"}, ""},
	} {
		if got := debianMirror(c.sources); got != c.want {
			t.Errorf("debianMirror(%q) = %q, want %q", c.sources, got, c.want)
		}
	}
}

func TestSystemdHostsMustBeTargets(t *testing.T) {
	_, err := New(Config{StateDir: t.TempDir(), Targets: []string{"a"}, Systemd: []string{"b"}}, run.Exec{})
	if err == nil || !strings.Contains(err.Error(), `systemd host "b" is not one of the targets`) {
		t.Fatalf("got %v", err)
	}
}

// requireSystemdPrereqs fails in CI (skips elsewhere) when this machine
// cannot boot systemd hosts.
func requireSystemdPrereqs(t *testing.T) {
	t.Helper()
	requirePrereqs(t)
	cache, err := DefaultRootCache()
	if err != nil {
		t.Fatal(err)
	}
	missing := SystemdPrerequisites(SystemdRootReady(cache, DebianSuite()))
	testutil.Require(t, len(missing) == 0, "systemd lab hosts need %s (apt-get install %s)", strings.Join(missing, ", "), strings.Join(SystemdPackages, " "))
}

// cgroupExists looks a cgroup up in the unified hierarchy.
func cgroupExists(t *testing.T, cg string) bool {
	t.Helper()
	mnt := t.TempDir()
	err := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", `mount -t cgroup2 x "$1" && test -d "$1$2"`, "probe", mnt, cg).Run()
	return err == nil
}

// TestSystemdHost boots a systemd host next to a plain one and checks what
// makes it a NixOS-like target: systemd as PID 1, sshd and nix-daemon as
// units, transient units through sudo, the knobs through systemctl, and
// that Down leaves nothing behind.
func TestSystemdHost(t *testing.T) {
	requireSystemdPrereqs(t)
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "state")
	cfg := Config{Name: "lsd", StateDir: dir, Subnet: "10.77.11.0/24", Targets: []string{"sd", "plain"}, Systemd: []string{"sd"}}
	start := time.Now()
	l, err := Start(ctx, cfg, run.Exec{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("lab with a systemd host up in %v", time.Since(start))
	downed := false
	defer func() {
		if !downed {
			_ = l.Down(context.Background())
		}
	}()
	h, _ := l.Host("sd")
	plain, _ := l.Host("plain")

	// state.json records the kind, supervisor and cgroup.
	var st State
	data, _ := os.ReadFile(filepath.Join(dir, "state.json"))
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatal(err)
	}
	for _, sh := range st.Hosts {
		if sh.Name == "sd" && (sh.Kind != KindSystemd || sh.Nspawn == 0 || !strings.Contains(sh.Cgroup, "nixos-config-lab-lsd-sd-") || sh.Root == "") {
			t.Errorf("state of sd: %+v", sh)
		}
		if sh.Name == "plain" && sh.Kind != "" {
			t.Errorf("state of plain: %+v", sh)
		}
	}
	if !cgroupExists(t, h.Cgroup) {
		t.Errorf("cgroup %s does not exist", h.Cgroup)
	}

	// Over SSH as the deploy user: systemd is PID 1, the services are units.
	out := mustSSH(t, l, "sd", "hostname; id -un; ps -p 1 -o comm=; systemctl is-system-running; systemctl is-active sshd.service nix-daemon.service; sudo -n true && echo sudo-ok; test -d /run/systemd/system && echo systemd-dir")
	for _, want := range []string{"sd\n", "monibahmed\n", "systemd\n", "running\n", "active\nactive\n", "sudo-ok\n", "systemd-dir\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("sd lacks %q:\n%s", want, out)
		}
	}
	if out := mustSSH(t, l, "plain", "test -d /run/systemd/system && echo systemd || echo none"); !strings.Contains(out, "none") {
		t.Errorf("the plain host looks like a systemd host: %s", out)
	}
	// A transient unit through sudo, as the deploy's activation runs.
	unit := mustSSH(t, l, "sd", `sudo systemd-run --collect --no-ask-password --pipe --quiet --service-type=exec --unit=lab-test-unit sh -c 'echo "unit=$INVOCATION_ID"; cat /proc/self/cgroup'`)
	if !strings.Contains(unit, "unit=") || strings.Contains(unit, "unit=\n") || !strings.Contains(unit, "lab-test-unit.service") {
		t.Errorf("transient unit: %q", unit)
	}
	// Its own store, Nix configuration and root. Only root is trusted by
	// default; the raw copy below needs the deploy user trusted.
	if conf := mustSSH(t, l, "sd", "cat /etc/nix/nix.conf"); !strings.Contains(conf, "trusted-users = root\n") {
		t.Errorf("default nix.conf: %s", conf)
	}
	if err := l.TrustUser(ctx, "sd", true); err != nil {
		t.Fatal(err)
	}
	p := uniquePath(t, 1024)
	if out, err := nixCopy(l, h, p); err != nil {
		t.Fatalf("nix copy to the systemd host: %v\n%s", err, out)
	}
	mustSSH(t, l, "sd", "test -e "+p)
	if _, err := ssh(t, l, "plain", "test -e "+p); err == nil {
		t.Error("a path copied to sd is on plain")
	}
	if conf := mustSSH(t, l, "sd", "cat /etc/nix/nix.conf"); !strings.Contains(conf, "trusted-users = root monibahmed") {
		t.Errorf("nix.conf: %s", conf)
	}
	if _, err := os.Stat(filepath.Join(h.Dir, "fs", p)); err != nil {
		t.Errorf("sd's store is not in its directory: %v", err)
	}
	mustSSH(t, l, "sd", "sudo touch /etc/lab-own-root")
	if _, err := os.Stat(filepath.Join(h.Root, "etc", "lab-own-root")); err == nil {
		t.Error("a write on the host reached the shared root")
	}

	// Knobs go through systemctl.
	if err := l.StopSSHD(ctx, "sd"); err != nil {
		t.Fatal(err)
	}
	if err := dial(h.Address); err == nil || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("sshd stopped, dial: %v", err)
	}
	if out, _ := l.Exec(ctx, "sd", "systemctl", "is-active", "sshd.service"); strings.TrimSpace(out) != "inactive" {
		t.Errorf("sshd.service after StopSSHD: %q", out)
	}
	if err := l.StartSSHD(ctx, "sd"); err != nil {
		t.Fatal(err)
	}
	if err := l.RequireSudoPassword(ctx, "sd", "lab-secret"); err != nil {
		t.Fatal(err)
	}
	if out, err := ssh(t, l, "sd", "sudo -n true"); err == nil {
		t.Errorf("sudo without the password: %s", out)
	}
	if out := mustSSH(t, l, "sd", "echo lab-secret | sudo -S -p '' id -u"); strings.TrimSpace(out) != "0" {
		t.Errorf("sudo with the password: %q", out)
	}
	if err := l.PasswordlessSudo(ctx, "sd"); err != nil {
		t.Fatal(err)
	}
	mustSSH(t, l, "sd", "sudo -n true")
	if err := l.TrustUser(ctx, "sd", false); err != nil {
		t.Fatal(err)
	}
	if conf := mustSSH(t, l, "sd", "cat /etc/nix/nix.conf; systemctl is-active nix-daemon.service"); !strings.Contains(conf, "trusted-users = root\n") || !strings.Contains(conf, "\nactive") {
		t.Errorf("untrusted: %s", conf)
	}
	if err := l.TrustUser(ctx, "sd", true); err != nil {
		t.Fatal(err)
	}
	if err := l.DisableSudoBinary(ctx, "sd", true); err != nil {
		t.Fatal(err)
	}
	if out, err := ssh(t, l, "sd", "sudo -n true"); err == nil {
		t.Errorf("sudo works while disabled: %s", out)
	}
	if err := l.DisableSudoBinary(ctx, "sd", false); err != nil {
		t.Fatal(err)
	}
	mustSSH(t, l, "sd", "sudo -n true")
	if err := l.InstallCommand(ctx, "sd", "lab-hello", "#!/bin/sh\necho hello from $(hostname)\n"); err != nil {
		t.Fatal(err)
	}
	if out := mustSSH(t, l, "sd", "lab-hello"); strings.TrimSpace(out) != "hello from sd" {
		t.Errorf("installed command: %q", out)
	}

	// Status knows the kind and the system state.
	sts, err := l.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sts {
		if s.Name == "sd" && (s.Kind != KindSystemd || !s.Running || !s.SSHD || !s.NixDaemon || s.SystemState != "running") {
			t.Errorf("status of sd: %+v", s)
		}
		if s.Name == "plain" && (s.Kind != "" || s.SystemState != "" || !s.SSHD) {
			t.Errorf("status of plain: %+v", s)
		}
	}

	// Up again keeps the host; the lab opened from its state knows its kind.
	l2, err := Open(dir, run.Exec{})
	if err != nil {
		t.Fatal(err)
	}
	if c := l2.Config(); len(c.Systemd) != 1 || c.Systemd[0] != "sd" || c.RootCache == "" || c.Suite != DebianSuite() {
		t.Errorf("opened config: %+v", c)
	}
	if err := l2.Up(ctx); err != nil {
		t.Fatal(err)
	}
	if h2, _ := l2.Host("sd"); h2.PID != h.PID {
		t.Errorf("up again replaced sd (pid %d -> %d)", h.PID, h2.PID)
	}

	// Down: no process, cgroup, mount, directory or network namespace left.
	if err := l2.Down(ctx); err != nil {
		t.Fatal(err)
	}
	downed = true
	for _, pid := range []int{h.PID, h.Nspawn, plain.PID} {
		if procStartTime(pid) != 0 {
			t.Errorf("process %d survived", pid)
		}
	}
	if left := leftovers(t, "lsd", []Host{h, plain}); len(left) > 0 {
		t.Errorf("left after down: %v", left)
	}
	if cgroupExists(t, h.Cgroup) {
		t.Errorf("cgroup %s left", h.Cgroup)
	}
	self, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(self), dir) {
		t.Error("a lab mount is visible on this machine")
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state directory left")
	}
	if _, err := os.Stat(filepath.Join(h.Root, "etc", "os-release")); err != nil {
		t.Errorf("the shared root went with the lab: %v", err)
	}
}

// TestDoubleOnSystemdHost: the double's switch-to-configuration on a
// systemd host controls sshd.service with systemctl, records the unit it
// ran in, forgets failed units and simulates one that fails after the
// switch.
func TestDoubleOnSystemdHost(t *testing.T) {
	requireSystemdPrereqs(t)
	ctx := context.Background()
	l, err := Start(ctx, Config{Name: "lsx", StateDir: filepath.Join(t.TempDir(), "state"), Subnet: "10.77.12.0/24",
		Targets: []string{"sx"}, Systemd: []string{"sx"}}, run.Exec{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Down(context.Background()) })
	h, _ := l.Host("sx")
	repo := testutil.CopyRepo(t)
	addTarget(t, repo, "port1", "  lab.simulate.sshd = { port = 2222; };")
	addTarget(t, repo, "unit2", "  lab.simulate.failingUnit = \"indexer\";")
	addTarget(t, repo, "cut3", "  lab.simulate.sshd = \"stop\";")
	good := buildDouble(t, repo, "media-center")
	port := buildDouble(t, repo, "port1")
	failing := buildDouble(t, repo, "unit2")
	cutting := buildDouble(t, repo, "cut3")
	if err := l.TrustUser(ctx, "sx", true); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{good, port, failing, cutting} {
		if out, err := nixCopy(l, h, p); err != nil {
			t.Fatalf("copy: %v %s", err, out)
		}
	}
	// In a transient unit, as the deploy runs it: the log names the unit.
	inUnit := func(p, unit string) string {
		t.Helper()
		return mustSSH(t, l, "sx", "sudo systemd-run --collect --no-ask-password --pipe --quiet --service-type=exec --unit="+unit+" "+p+"/bin/switch-to-configuration switch 2>&1")
	}
	inUnit(good, "lab-switch-1")
	if o := mustSSH(t, l, "sx", "tail -1 /var/lib/nixos-double/activations.log"); !strings.HasSuffix(strings.TrimSpace(o), " switch "+good+" 0 lab-switch-1.service") {
		t.Errorf("activation log: %q", o)
	}

	// Another port: sshd.service restarts with a drop-in; the good system
	// brings port 22 back.
	if o := inUnit(port, "lab-switch-2"); !strings.Contains(o, "restarting the following units: sshd.service") {
		t.Errorf("port switch: %q", o)
	}
	if err := dialPort(h.Address, "2222"); err != nil {
		t.Errorf("sshd on 2222: %v", err)
	}
	if err := dial(h.Address); err == nil {
		t.Error("sshd still on 22")
	}
	if o, err := l.Exec(ctx, "sx", good+"/bin/switch-to-configuration", "switch"); err != nil || !strings.Contains(o, "restarting the following units: sshd.service") {
		t.Fatalf("back to port 22: %v %q", err, o)
	}
	if err := dial(h.Address); err != nil {
		t.Fatalf("sshd not back on 22: %v", err)
	}

	// A unit that fails after the switch: success, then a degraded system;
	// the next switch forgets it.
	if o := inUnit(failing, "lab-switch-3"); !strings.Contains(o, "starting the following units: indexer.service") {
		t.Errorf("failing-unit switch: %q", o)
	}
	if o := mustSSH(t, l, "sx", "systemctl is-system-running; systemctl --failed --no-legend --plain"); !strings.HasPrefix(o, "degraded\n") || !strings.Contains(o, "indexer.service") {
		t.Errorf("after the failing unit: %q", o)
	}
	inUnit(good, "lab-switch-4")
	if o := strings.TrimSpace(mustSSH(t, l, "sx", "systemctl is-system-running")); o != "running" {
		t.Errorf("after switching back: %q", o)
	}

	// A configuration that stops sshd: sshd.service is stopped; switching
	// back from the console starts it.
	out, _ := ssh(t, l, "sx", "sudo systemd-run --collect --pipe --quiet --service-type=exec "+cutting+"/bin/switch-to-configuration switch 2>&1")
	if !strings.Contains(out, "stopping the following units: sshd.service") {
		t.Errorf("cutting switch: %q", out)
	}
	if o, _ := l.Exec(ctx, "sx", "systemctl", "is-active", "sshd.service"); strings.TrimSpace(o) != "inactive" {
		t.Errorf("sshd.service after the cutting switch: %q", o)
	}
	if o, err := l.Exec(ctx, "sx", good+"/bin/switch-to-configuration", "switch"); err != nil || !strings.Contains(o, "starting the following units: sshd.service") {
		t.Fatalf("switch back: %v %q", err, o)
	}
	if err := dial(h.Address); err != nil {
		t.Fatalf("sshd not back: %v", err)
	}
}

func dialPort(addr, port string) error {
	c, err := net.DialTimeout("tcp", net.JoinHostPort(addr, port), 1500*time.Millisecond)
	if err == nil {
		c.Close()
	}
	return err
}
