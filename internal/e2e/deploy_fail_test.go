package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/monibahmed/nixos-config/internal/testutil"
)

func TestFailUnknownTargetAndInvalidAddress(t *testing.T) {
	f := newFixture(t)
	failsWith(t, f.mage("deploy", "lab-sever", "-", "-lab"), `unknown target "lab-sever"`, "dev-workstation, lab-server, media-center")
	failsWith(t, f.mage("deploy", "lab;rm", "-", "-lab"), `invalid target name "lab;rm"`)
	failsWith(t, f.mage("deploy", "lab-server", "10.77.50.300", "-lab"), `invalid address "10.77.50.300"`)
	failsWith(t, f.mage("deploy", "lab-server", "$(reboot)", "-lab"), `invalid address "$(reboot)"`)
	failsWith(t, f.mage("deployAll", "-lab", "-on=nothing-*"), `"nothing-*" matches no target`)
}

func TestFailConnectionRefusedOthersUnaffected(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if err := f.lab.StopSSHD(ctx, "media-center"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.lab.StartSSHD(ctx, "media-center") })
	r := f.mage("deployAll", "-lab")
	failsWith(t, r, "1 of 3 targets failed: media-center")
	if !strings.Contains(r.Stdout, "media-center: preflight: connection refused by 10.77.50.12:22: sshd is not running") {
		t.Errorf("cause missing:\n%s", r.Stdout)
	}
	for _, h := range []string{"dev-workstation", "lab-server"} {
		if f.generation(h) != 1 {
			t.Errorf("%s not deployed", h)
		}
	}
	if f.generation("media-center") != 0 {
		t.Error("media-center changed")
	}
}

func TestFailTimeoutAndUnreachable(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if err := f.lab.Blackhole(ctx, "lab-server", true); err != nil {
		t.Fatal(err)
	}
	r := f.mage("deploy", "lab-server", "-", "-lab", "-timeout=2s")
	f.lab.Blackhole(ctx, "lab-server", false)
	failsWith(t, r, "lab-server: preflight: no answer from 10.77.50.11:22 within 2s", "firewall")

	if err := f.lab.SetLink(ctx, "lab-server", false); err != nil {
		t.Fatal(err)
	}
	r = f.mage("deploy", "lab-server", "-", "-lab", "-timeout=5s")
	f.lab.SetLink(ctx, "lab-server", true)
	// The kernel answers "no route" once ARP gives up, or the connect times out first.
	line := testutil.ErrorLine(r)
	if r.Code == 0 || !(strings.Contains(line, "no route to 10.77.50.11:22") || strings.Contains(line, "no answer from 10.77.50.11:22")) {
		t.Errorf("link down: %s", r.Combined())
	}
}

func TestFailDNS(t *testing.T) {
	f := newFixture(t)
	// A network namespace whose resolver is 127.0.0.1 inside it, where nothing
	// listens: the lookup fails without any packet leaving the machine.
	ns := "e2d-dns"
	etc := filepath.Join("/etc/netns", ns)
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(etc, "resolv.conf"), []byte("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		exec.Command("ip", "netns", "del", ns).Run()
		os.RemoveAll(etc)
	})
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	exec.Command("ip", "-n", ns, "link", "set", "lo", "up").Run()
	r := testutil.Run(t, f.repo, nil, "ip", "netns", "exec", ns, testutil.MageBinary(t), "deploy", "lab-server", "lab-server.no-such-domain.invalid", "-lab")
	failsWith(t, r, "lab-server: preflight: cannot resolve lab-server.no-such-domain.invalid", "use the machine's IP address")
}

func TestFailHostKeys(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	kh := f.lab.KnownHostsPath()
	orig, err := os.ReadFile(kh)
	if err != nil {
		t.Fatal(err)
	}
	// Whatever happens, known_hosts ends with the targets' current keys.
	t.Cleanup(func() { f.lab.AcceptHostKeys() })

	// Unknown: the target's line removed from known_hosts.
	var kept []string
	for _, l := range strings.Split(string(orig), "\n") {
		if !strings.HasPrefix(l, "10.77.50.11 ") {
			kept = append(kept, l)
		}
	}
	os.WriteFile(kh, []byte(strings.Join(kept, "\n")), 0o644)
	fp, err := f.lab.Fingerprint("lab-server")
	if err != nil || !strings.HasPrefix(fp, "SHA256:") {
		t.Fatalf("fingerprint: %q %v", fp, err)
	}
	failsWith(t, f.mage("deploy", "lab-server", "-", "-lab"), "host key of 10.77.50.11 is not in", fp, "ssh-keyscan -t ed25519 10.77.50.11 >>")
	if after, _ := os.ReadFile(kh); strings.Contains(string(after), "10.77.50.11 ") {
		t.Error("the unknown key was added to known_hosts")
	}
	os.WriteFile(kh, orig, 0o644)

	// Changed: the target gets a new host key.
	if err := f.lab.RotateHostKey(ctx, "lab-server"); err != nil {
		t.Fatal(err)
	}
	newFP, err := f.lab.Fingerprint("lab-server")
	if err != nil || !strings.HasPrefix(newFP, "SHA256:") || newFP == fp {
		t.Fatalf("new host key fingerprint %q (%v), was %q", newFP, err, fp)
	}
	failsWith(t, f.mage("deploy", "lab-server", "-", "-lab"), "HOST KEY OF 10.77.50.11 HAS CHANGED", newFP, "man-in-the-middle", "ssh-keygen -R 10.77.50.11")
	if f.generation("lab-server") != 0 {
		t.Error("deployed despite a changed host key")
	}
}

// The target's nix-daemon is stopped: the deployment stops before
// copying, naming the daemon and how to start it; the target stays as it is.
func TestFailNixDaemonStopped(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if err := f.lab.StopNixDaemon(ctx, "lab-server"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.lab.StartNixDaemon(ctx, "lab-server") })
	failsWith(t, f.mage("deploy", "lab-server", "-", "-lab"), "lab-server: copy: the target's nix-daemon is not running", "systemctl start nix-daemon.socket")
	if f.generation("lab-server") != 0 {
		t.Error("deployed without a nix-daemon")
	}
	if err := f.lab.StartNixDaemon(ctx, "lab-server"); err != nil {
		t.Fatal(err)
	}
	healthy(t, f, "lab-server")
}

func TestFailKeyRejected(t *testing.T) {
	f := newFixture(t)
	failsWith(t, f.mage("deploy", "lab-server", "-", "-lab", "-user=intruder"), "intruder@10.77.50.11 rejected our SSH keys", "authorizedKeys")
}

func TestFailSudo(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	t.Cleanup(func() {
		f.lab.PasswordlessSudo(ctx, "lab-server")
		f.lab.DisableSudoBinary(ctx, "lab-server", false)
	})
	if err := f.lab.RequireSudoPassword(ctx, "lab-server", "s3cret-lab-pw"); err != nil {
		t.Fatal(err)
	}
	// No terminal and no -asksudo: fail with both ways out.
	failsWith(t, f.mage("deploy", "lab-server", "-", "-lab"), "sudo on the target needs a password and there is no terminal", "-asksudo", "passwordless sudo")
	// Wrong password.
	failsWith(t, f.mageStdin("wrong-password\n", "deploy", "lab-server", "-", "-lab", "-asksudo"), "rejected the password")
	// No sudo rights at all (the password is right, sudoers says no).
	if err := f.lab.RemoveSudo(ctx, "lab-server"); err != nil {
		t.Fatal(err)
	}
	failsWith(t, f.mageStdin("s3cret-lab-pw\n", "deploy", "lab-server", "-", "-lab", "-asksudo"), "monibahmed may not use sudo on lab-server", "wheel")
	// sudo not installed.
	f.lab.PasswordlessSudo(ctx, "lab-server")
	if err := f.lab.DisableSudoBinary(ctx, "lab-server", true); err != nil {
		t.Fatal(err)
	}
	failsWith(t, f.mage("deploy", "lab-server", "-", "-lab"), "sudo is not available to monibahmed", "security.sudo.enable")
	if f.generation("lab-server") != 0 {
		t.Error("deployed without sudo")
	}
}

func TestFailUntrustedUser(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if err := f.lab.TrustUser(ctx, "lab-server", false); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.lab.TrustUser(ctx, "lab-server", false) })
	// A system the target does not have yet.
	f.setConfig("lab-server", `environment.etc."untrusted".text = "x";`)
	f.commit("new system")
	// The default copy (a root daemon through sudo) needs no trust; the old
	// way, as the deploy user, is refused with the remedy.
	failsWith(t, f.mage("deploy", "lab-server", "-", "-lab", "-trust=trusted"), "lab-server: copy: the target's Nix refuses unsigned paths from monibahmed", "-trust=sudo")
}

func TestFailDiskFull(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	// 24 MiB: Nix itself reserves 8 MiB (gc-reserved-space) for its database.
	if err := f.lab.LimitDisk(ctx, "lab-server", 24); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := f.lab.LimitDisk(ctx, "lab-server", 0); err != nil {
			t.Error(err)
		}
		if fs := f.exec("lab-server", "findmnt -n -o SOURCE /nix | tail -n 1"); fs == "lab-small-disk" {
			t.Error("the small disk is still mounted")
		}
	})
	failsWith(t, f.mage("deploy", "lab-server", "-", "-lab"), "lab-server: copy: not enough disk space on the target's /nix", "free", "nix-collect-garbage")
	if f.generation("lab-server") != 0 {
		t.Error("deployed to a full disk")
	}
}

// A /nix with no byte free (1 MiB, filled). Depending on the version, Nix's
// query for missing paths names the full disk ("database or disk is
// full"), or answers and the measured free space stops the copy, or (Nix
// 2.34) the daemon hangs up ("read of 32768 bytes: Connection reset by
// peer") and the free space printed before the query tells the full disk
// from a crashed daemon. Always: the disk remedy, never the daemon's
// journal.
func TestFailDiskCompletelyFull(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	current := f.current("lab-server")
	if err := f.lab.LimitDisk(ctx, "lab-server", 1); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := f.lab.LimitDisk(ctx, "lab-server", 0); err != nil {
			t.Error(err)
		}
	})
	// Whatever room the daemon's start left is taken.
	f.exec("lab-server", "cat /dev/zero > /nix/fill 2>/dev/null || true")
	if free := f.exec("lab-server", "df -Pk /nix/store | awk 'NR==2 {print $4}'"); free != "0" {
		t.Fatalf("/nix has %s KiB free, want 0", free)
	}
	r := f.mage("deploy", "lab-server", "-", "-lab")
	failsWith(t, r, "lab-server: copy: ", "nix-collect-garbage")
	if line := testutil.ErrorLine(r); !regexp.MustCompile(`lab-server: copy: (not enough disk space on the target's /nix: [^:]*, 0 B are free|the target's /nix is full)`).MatchString(line) {
		t.Errorf("the error does not name the full disk: %q", line)
	}
	if strings.Contains(r.Combined(), "journalctl") {
		t.Errorf("a full disk is reported as a daemon failure:\n%s", r.Combined())
	}
	if f.generation("lab-server") != 0 || f.current("lab-server") != current {
		t.Errorf("deployed to a full disk: generation %d, current system %q (was %q)", f.generation("lab-server"), f.current("lab-server"), current)
	}
}

func TestFailEvaluationBuildAndActivation(t *testing.T) {
	f := newFixture(t)
	testutil.Edit(t, f.repo, "targets/lab-server/configuration.nix", "port = 8888;", `port = 8888 + "x";`)
	f.setConfig("media-center", `lab.simulate.build.failure = "simulated: make: *** [all] Error 2";`)
	f.setConfig("dev-workstation", `lab.simulate.activation = { exitCode = 4; message = "warning: the following units failed: broken.service"; };`)
	f.commit("three broken targets")
	r := f.mage("deployAll", "-lab")
	failsWith(t, r, "3 of 3 targets failed")
	// One line, naming the derivation and the exit code, whichever Nix
	// worded it (2.8-2.26 "builder for '…drv' failed with exit code 1", 2.34
	// "Cannot build '…drv'. Reason: builder failed with exit code 1.").
	if !regexp.MustCompile(`media-center: build: build failed: [^\n]*/nix/store/[0-9a-z]{32}-nixos-system-media-center-[^\n]*\.drv[^\n]*exit code 1`).MatchString(r.Stdout) {
		t.Errorf("the build failure is not one line naming the derivation and exit code:\n%s", r.Stdout)
	}
	for _, want := range []string{
		"lab-server: build: evaluation error: targets/lab-server/configuration.nix:51:19: cannot add a string to an integer",
		"simulated: make: *** [all] Error 2",
		"dev-workstation: activate: switch-to-configuration switch exited with status 4",
		"warning: the following units failed: broken.service",
	} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, r.Stdout)
		}
	}
}

func TestFailOneBrokenOthersDeploy(t *testing.T) {
	f := newFixture(t)
	testutil.Edit(t, f.repo, "targets/lab-server/configuration.nix", "port = 8888;", `port = 8888 + "x";`)
	f.commit("broken lab-server")
	r := f.mage("deployAll", "-lab")
	failsWith(t, r, "1 of 3 targets failed: lab-server")
	for _, h := range []string{"dev-workstation", "media-center"} {
		if f.generation(h) != 1 {
			t.Errorf("%s was not deployed", h)
		}
	}
}

func TestInterruptStopsBeforeActivation(t *testing.T) {
	f := newFixture(t)
	slowCopy(t, f, "media-center")
	cmd := exec.Command(testutil.MageBinary(t), "deployAll", "-lab")
	cmd.Dir = f.repo
	var out strings.Builder
	pr, pw, _ := os.Pipe()
	cmd.Stdout, cmd.Stderr = pw, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	var so strings.Builder
	buf := make([]byte, 4096)
	sent := false
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		n, err := pr.Read(buf)
		so.Write(buf[:n])
		if !sent && strings.Contains(so.String(), "media-center: copy 0 B") {
			cmd.Process.Signal(os.Interrupt)
			sent = true
		}
		if err != nil {
			break
		}
	}
	err := cmd.Wait()
	if !sent {
		t.Fatalf("the copy never started:\n%s", so.String())
	}
	if err == nil {
		t.Fatalf("an interrupted deploy exited 0:\n%s", so.String())
	}
	if !strings.Contains(so.String(), "media-center: interrupted") || !strings.Contains(so.String(), "nothing changed on this target") {
		t.Errorf("interrupted target not reported:\n%s%s", so.String(), out.String())
	}
	if f.generation("media-center") != 0 || f.current("media-center") != "" {
		t.Error("media-center changed after the interrupt")
	}
}

// A wrong address must not put one target's system on another machine.
func TestFailWrongMachine(t *testing.T) {
	f := newFixture(t)
	media := f.host("media-center")
	r := f.mage("deploy", "lab-server", media.Address, "-lab")
	failsWith(t, r, `lab-server: preflight: `+media.Address+` answers as "media-center", not "lab-server"`, "-force")
	if f.generation("media-center") != 0 {
		t.Fatal("lab-server's system reached media-center")
	}
	// -force deploys anyway (here, on purpose, onto the other lab host).
	succeeds(t, f.mage("deploy", "lab-server", media.Address, "-lab", "-force"))
	if cur := f.current("media-center"); !strings.Contains(cur, "-nixos-system-lab-server-") {
		t.Fatalf("-force: media-center runs %s", cur)
	}
}

// A deployment that fails before it needs its system (its preflight
// fails) stops the shared build and waits for it: Nix removes its
// temporary copy of the flake instead of being killed with the deployer,
// and nothing is left in TMPDIR.
func TestFailEarlyStopsBuildCleanly(t *testing.T) {
	f := newFixture(t)
	const host = "dev-workstation"
	f.setConfig(host, `environment.etc."early".text = "`+unique()+`";`)
	f.commit("new system")
	setLoginShell(t, f, host, "/bin/true")
	tmp, err := os.MkdirTemp("", "early-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(tmp) })
	r := testutil.Run(t, f.repo, []string{"TMPDIR=" + tmp}, testutil.MageBinary(t), "deploy", host, "-", "-lab")
	failsWith(t, r, host+": preflight:")
	left, _ := os.ReadDir(tmp)
	var names []string
	for _, e := range left {
		names = append(names, e.Name())
	}
	if len(names) > 0 {
		t.Fatalf("left in TMPDIR: %v\n%s", names, r.Combined())
	}
}
