package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/monibahmed/nixos-config/internal/inventory"
	"github.com/monibahmed/nixos-config/internal/lab"
	"github.com/monibahmed/nixos-config/internal/testutil"
)

// Builds on the target or on a build host: a lab host whose nix.conf has
// extra-platforms = aarch64-linux plays an aarch64 machine (the double's
// builders are /bin/sh and coreutils), while this machine (the deployer)
// builds x86_64-linux only, as a laptop next to a Raspberry Pi.

const foreign = "aarch64-linux"

// setFacts changes a target of the lab inventory for the test.
func setFacts(t *testing.T, f *fixture, host string, change func(*inventory.Facts)) {
	t.Helper()
	editTarget(t, f, host, func(tg *inventory.Target) { change(&tg.Facts) })
}

// editTarget changes a target of the lab inventory for the test (restored
// afterwards).
func editTarget(t *testing.T, f *fixture, host string, change func(*inventory.Target)) {
	t.Helper()
	path := f.lab.InventoryPath()
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.WriteFile(path, orig, 0o644) })
	inv, err := inventory.Parse(orig, path)
	if err != nil {
		t.Fatal(err)
	}
	for i := range inv.Targets {
		if inv.Targets[i].Name == host {
			change(&inv.Targets[i])
		}
	}
	data, _ := inv.Marshal()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// makeForeign turns a target into an aarch64 machine: its target.json and
// hardware configuration in the repository, its lab inventory entry, and
// a closure of a unique blob of mib MiB (so that its system is new to
// every store, and its bytes are seen on a link).
func makeForeign(t *testing.T, f *fixture, host string, mib int) {
	t.Helper()
	testutil.Edit(t, f.repo, "targets/"+host+"/target.json", `"x86_64-linux"`, `"`+foreign+`"`)
	testutil.Edit(t, f.repo, "targets/"+host+"/hardware-configuration.nix", `"x86_64-linux"`, `"`+foreign+`"`)
	f.setConfig(host, fmt.Sprintf(`lab.simulate.closure.uniqueMiB = %d; lab.simulate.closure.seed = "%s";`, mib, unique()))
	f.commit("aarch64 " + host)
	setFacts(t, f, host, func(fa *inventory.Facts) { fa.System = foreign })
}

func unique() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// buildsOnForeignHost makes host an aarch64 target (makeForeign) whose
// target.json builds it on builder, which plays an aarch64 machine.
func buildsOnForeignHost(t *testing.T, f *fixture, host, builder string, mib int) {
	t.Helper()
	makeForeign(t, f, host, mib)
	playsForeign(t, f, builder)
	setFacts(t, f, host, func(fa *inventory.Facts) { fa.Build = builder })
}

// playsForeign gives a lab host extra-platforms = aarch64-linux for the test.
func playsForeign(t *testing.T, f *fixture, host string) {
	t.Helper()
	ctx := context.Background()
	if err := f.lab.ExtraPlatforms(ctx, host, foreign); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.lab.ExtraPlatforms(ctx, host) })
}

// localValid tells whether a path is valid in this machine's store.
func localValid(path string) bool {
	return exec.Command("nix-store", "--check-validity", path).Run() == nil
}

// validOn tells whether a path is valid in a lab host's store.
func validOn(f *fixture, host, path string) bool {
	return f.exec(host, "nix-store --check-validity "+path+" 2>/dev/null && echo yes || echo no") == "yes"
}

func rxBytes(t *testing.T, f *fixture, host string) int64 {
	t.Helper()
	rx, _, err := f.lab.LinkBytes(context.Background(), host)
	if err != nil {
		t.Fatal(err)
	}
	return rx
}

func txBytes(t *testing.T, f *fixture, host string) int64 {
	t.Helper()
	_, tx, err := f.lab.LinkBytes(context.Background(), host)
	if err != nil {
		t.Fatal(err)
	}
	return tx
}

// blobOf is the closure's blob on a host, and its size in bytes.
func blobOf(f *fixture, host, system string) (string, int64) {
	dep := f.exec(host, "cat "+system+"/dependencies")
	var size int64
	fmt.Sscan(f.exec(host, "stat -c %s "+dep+"/blob"), &size)
	return dep, size
}

func TestBuildOnTarget(t *testing.T) {
	f := newFixture(t)
	const host = "media-center"
	makeForeign(t, f, host, 8)

	// This machine cannot build an aarch64 system, and nothing says where
	// else to build it: the target fails before anything is copied.
	r := f.mage("deploy", host, "-", "-lab")
	failsWith(t, r, host+": build: this machine builds x86_64-linux", "not aarch64-linux", `"build": "target"`, "targets/media-center/target.json", "-buildon=target", "nothing was copied", "systems-this-machine-cannot-build")
	if strings.Contains(r.Stdout, host+": copy") || f.generation(host) != 0 {
		t.Fatalf("copied or activated:\n%s", r.Combined())
	}

	// mage build has no -buildon: its remedy says so.
	r = f.mage("build:host", host, "-lab")
	failsWith(t, r, "this machine builds x86_64-linux", "mage build builds on this machine only", "mage deploy "+host+" builds where")
	if strings.Contains(r.Combined(), "-buildon=target for this run") {
		t.Errorf("mage build's remedy names a flag mage build lacks:\n%s", r.Combined())
	}

	// A target that cannot build its own system either: named, nothing
	// sent, the remedy points at target.json's "system" and build hosts.
	r = f.mage("deploy", host, "-", "-lab", "-buildon=target")
	failsWith(t, r, host+": build: the target media-center cannot build aarch64-linux systems", `check "system" in the target's target.json`, "nothing was copied", "remote-builds")
	if strings.Contains(r.Stdout, "derivations sent") || f.generation(host) != 0 {
		t.Fatalf("sent or activated:\n%s", r.Combined())
	}

	// -buildon=target: evaluated here, built there.
	playsForeign(t, f, host)
	rx := rxBytes(t, f, host)
	r = f.mage("deploy", host, "-", "-lab", "-buildon=target")
	succeeds(t, r)
	received := rxBytes(t, f, host) - rx
	system := f.current(host)
	if f.generation(host) != 1 || !strings.Contains(system, "-nixos-system-media-center-") {
		t.Fatalf("not activated: generation %d, %q\n%s", f.generation(host), system, r.Combined())
	}
	blob, size := blobOf(f, host, system)
	if size != 8<<20 {
		t.Fatalf("blob %s has %d bytes", blob, size)
	}
	// Nothing of the system came from this machine: it never had it, and
	// the target's link carried far less than the closure.
	if localValid(system) || localValid(blob) {
		t.Errorf("the deploying machine's store has the system or its blob")
	}
	if received > 1<<20 {
		t.Errorf("the target received %d bytes for a closure of %d (the system was copied, not built there)", received, size)
	}
	if !regexp.MustCompile(`media-center: build on media-center: \d+/\d+ derivations built`).MatchString(r.Stdout) ||
		!regexp.MustCompile(`media-center: derivations sent to media-center \(\d+(\.\d)? KiB\)`).MatchString(r.Stdout) {
		t.Errorf("no progress of the remote build:\n%s", r.Stdout)
	}
	if !regexp.MustCompile(`media-center\s+\S+\s+ok\s+1\s+target\s`).MatchString(r.Stdout) {
		t.Errorf("summary has no build location:\n%s", r.Stdout)
	}
	t.Logf("link of the target: %d bytes received for a closure of %d bytes", received, size)

	// target.json's "build" does the same without the flag.
	setFacts(t, f, host, func(fa *inventory.Facts) { fa.Build = inventory.BuildTarget })
	f.setConfig(host, `environment.etc."next".text = "`+unique()+`";`)
	f.commit("next")
	r = f.mage("deploy", host, "-", "-lab")
	succeeds(t, r)
	if f.generation(host) != 2 || localValid(f.current(host)) {
		t.Fatalf("generation %d; local copy: %v\n%s", f.generation(host), localValid(f.current(host)), r.Combined())
	}
}

func TestBuildOnBuildHost(t *testing.T) {
	f := newFixture(t)
	const host, builder = "media-center", "dev-workstation"
	makeForeign(t, f, host, 8)
	ctx := context.Background()

	// A build host that does not build aarch64: refused before anything
	// is sent to it.
	r := f.mage("deploy", host, "-", "-lab", "-buildon="+builder)
	failsWith(t, r, host+": build: the build host dev-workstation cannot build aarch64-linux systems (its Nix builds x86_64-linux", "extra-platforms", "nothing was copied", "remote-builds")
	if strings.Contains(r.Stdout, "derivations sent") || f.generation(host) != 0 {
		t.Fatalf("sent or activated:\n%s", r.Combined())
	}

	playsForeign(t, f, builder)
	setFacts(t, f, host, func(fa *inventory.Facts) { fa.Build = builder })
	txb, rxt := txBytes(t, f, builder), rxBytes(t, f, host)
	r = f.mage("deploy", host, "-", "-lab")
	succeeds(t, r)
	system := f.current(host)
	if f.generation(host) != 1 || !validOn(f, builder, system) || localValid(system) {
		t.Fatalf("generation %d, on the builder %v, here %v\n%s", f.generation(host), validOn(f, builder, system), localValid(system), r.Combined())
	}
	if f.generation(builder) != 0 {
		t.Errorf("the build host was activated")
	}
	_, size := blobOf(f, host, system)
	sent, received := txBytes(t, f, builder)-txb, rxBytes(t, f, host)-rxt
	if sent < size || received < size {
		t.Errorf("the closure (%d bytes) did not go builder -> here -> target: the builder sent %d, the target received %d", size, sent, received)
	}
	if !regexp.MustCompile(`media-center\s+\S+\s+ok\s+1\s+dev-workstation\s`).MatchString(r.Stdout) || !strings.Contains(r.Stdout, "media-center: build on dev-workstation: ") {
		t.Errorf("summary or progress:\n%s", r.Stdout)
	}
	t.Logf("closure %d bytes: the build host sent %d, the target received %d", size, sent, received)

	// The build host unreachable: the target is left as it was.
	f.setConfig(host, `environment.etc."next".text = "`+unique()+`";`)
	f.commit("next")
	if err := f.lab.StopSSHD(ctx, builder); err != nil {
		t.Fatal(err)
	}
	r = f.mage("deploy", host, "-", "-lab", "-timeout=3s")
	f.lab.StartSSHD(ctx, builder)
	failsWith(t, r, host+": build: the build host dev-workstation is unreachable", "-buildon=local or -buildon=target", "nothing was copied")
	if f.generation(host) != 1 || f.current(host) != system {
		t.Fatalf("the target changed: generation %d", f.generation(host))
	}

	// The build host's disk full during the build.
	testutil.Edit(t, f.repo, "targets/"+host+"/configuration.nix", "uniqueMiB = 8;", "uniqueMiB = 40;")
	f.commit("bigger")
	if err := f.lab.LimitDisk(ctx, builder, 24); err != nil {
		t.Fatal(err)
	}
	defer f.lab.LimitDisk(ctx, builder, 0)
	r = f.mage("deploy", host, "-", "-lab")
	failsWith(t, r, host+": build: the build host dev-workstation ran out of disk space during the build", "nix-collect-garbage", "remote-builds")
	if f.generation(host) != 1 {
		t.Fatalf("the target changed: generation %d", f.generation(host))
	}
}

// One evaluation for a mixed fleet: a target built here, one on itself
// and one on a build host, from one `nix eval`, and no `nix build`.
func TestMixedFleetEvaluatesOnce(t *testing.T) {
	f := newFixture(t)
	makeForeign(t, f, "media-center", 1)
	playsForeign(t, f, "media-center")
	setFacts(t, f, "media-center", func(fa *inventory.Facts) { fa.Build = inventory.BuildTarget })
	setFacts(t, f, "dev-workstation", func(fa *inventory.Facts) { fa.Build = "lab-server" })
	f.setConfig("dev-workstation", `environment.etc."mixed".text = "`+unique()+`";`)
	f.commit("mixed")
	shim := t.TempDir()
	log := filepath.Join(shim, "log")
	for _, bin := range []string{"nix", "nix-store"} {
		real, err := exec.LookPath(bin)
		if err != nil {
			t.Fatal(err)
		}
		script := fmt.Sprintf("#!/bin/sh\nprintf '%%s\\n' \"%s $*\" >> %s\nexec %s \"$@\"\n", bin, log, real)
		if err := os.WriteFile(filepath.Join(shim, bin), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	r := testutil.Run(t, f.repo, []string{"PATH=" + shim + ":" + os.Getenv("PATH")}, testutil.MageBinary(t), "deployAll", "-lab")
	succeeds(t, r)
	for _, want := range []string{`lab-server\s+\S+\s+ok\s+1\s+local\s`, `media-center\s+\S+\s+ok\s+1\s+target\s`, `dev-workstation\s+\S+\s+ok\s+1\s+lab-server\s`} {
		if !regexp.MustCompile(want).MatchString(r.Stdout) {
			t.Errorf("summary lacks %s:\n%s", want, r.Stdout)
		}
	}
	data, _ := os.ReadFile(log)
	var evals, builds, realises int
	for _, l := range strings.Split(string(data), "\n") {
		switch {
		case strings.HasPrefix(l, "nix ") && strings.Contains(l, " eval "):
			evals++
		case strings.HasPrefix(l, "nix ") && strings.Contains(l, " build "):
			builds++
		case strings.HasPrefix(l, "nix-store ") && strings.Contains(l, " --realise "):
			realises++
		}
	}
	if evals != 1 || builds != 0 || realises != 1 {
		t.Errorf("%d evaluations, %d nix builds, %d local realisations (want 1, 0, 1):\n%s", evals, builds, realises, data)
	}
	if localValid(f.current("dev-workstation")) || !validOn(f, "lab-server", f.current("dev-workstation")) {
		t.Errorf("dev-workstation's system was not built on lab-server only")
	}
}

// What the daemons must trust: derivations are content-addressed, so a
// target (or build host) whose nix-daemon trusts no user besides root takes
// them from the SSH user's `nix-daemon --stdio` and builds them, whatever
// -trust says; only the built paths of a build host need a trusted way onto
// the target (-trust=sudo, or a trusted user).
func TestRemoteBuildTrust(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	for _, h := range []string{"media-center", "dev-workstation"} {
		if err := f.lab.TrustUser(ctx, h, false); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.lab.TrustUser(ctx, h, false) }) // the lab's default
	}
	const host = "media-center"
	f.setConfig(host, `environment.etc."trust".text = "`+unique()+`";`)
	f.commit("trust")
	succeeds(t, f.mage("deploy", host, "-", "-lab", "-buildon=target", "-trust=trusted"))
	if f.generation(host) != 1 || localValid(f.current(host)) {
		t.Fatalf("generation %d", f.generation(host))
	}
	f.setConfig(host, `environment.etc."trust2".text = "`+unique()+`";`)
	f.commit("trust2")
	r := f.mage("deploy", host, "-", "-lab", "-buildon=dev-workstation", "-trust=trusted")
	failsWith(t, r, host+": copy: the target's Nix refuses unsigned paths from monibahmed", "-trust=sudo")
	if !strings.Contains(r.Stdout, "build on dev-workstation:") || f.generation(host) != 1 {
		t.Fatalf("not built on the untrusting build host, or activated:\n%s", r.Combined())
	}
	succeeds(t, f.mage("deploy", host, "-", "-lab", "-buildon=dev-workstation", "-trust=sudo"))
	if f.generation(host) != 2 || !validOn(f, "dev-workstation", f.current(host)) {
		t.Fatalf("generation %d", f.generation(host))
	}
	// Signed closures are signed here: a build host's output never is.
	failsWith(t, f.mage("deploy", host, "-", "-lab", "-buildon=dev-workstation", "-trust=signed"), "-trust=signed signs only what is built on this machine", "-buildon=target needs no trust")
}

// mage check's inventory lint knows "build": a bad value, a build host
// that is no target, one of another system; mage targets shows it.
func TestCheckLintsBuild(t *testing.T) {
	requireNix(t)
	dir := testutil.CopyRepo(t)
	r := mage(t, dir, "targets")
	if !regexp.MustCompile(`media-center\s+192\.168\.1\.75\s+monibahmed\s+x86_64-linux\s+local\s`).MatchString(r.Stdout) {
		t.Errorf("mage targets shows no build location:\n%s", r.Stdout)
	}
	testutil.Edit(t, dir, "targets/media-center/target.json", `"system": "x86_64-linux",`, `"system": "x86_64-linux", "build": "garage-pi",`)
	assertFails(t, check(t, dir, "-offline"), "stage 2/4 (inventory)", `targets/media-center: build host "garage-pi" is not a target of the inventory`)
	testutil.Edit(t, dir, "targets/media-center/target.json", `"garage-pi"`, `"the lab server"`)
	assertFails(t, check(t, dir, "-offline"), "stage 2/4 (inventory)", `targets/media-center: invalid build "the lab server"`)
	testutil.Edit(t, dir, "targets/media-center/target.json", `"the lab server"`, `"lab-server"`)
	testutil.Edit(t, dir, "targets/lab-server/target.json", `"x86_64-linux"`, `"aarch64-linux"`)
	testutil.Edit(t, dir, "targets/lab-server/hardware-configuration.nix", `"x86_64-linux"`, `"aarch64-linux"`)
	assertFails(t, check(t, dir, "-offline"), "stage 2/4 (inventory)", "targets/media-center: build host lab-server is aarch64-linux but this target is x86_64-linux")
	testutil.Edit(t, dir, "targets/media-center/target.json", `"lab-server"`, `"target"`)
	testutil.Git(t, dir, "add", "-A")
	succeeds(t, check(t, dir, "-offline"))
	if r := mage(t, dir, "targets"); !regexp.MustCompile(`media-center\s+\S+\s+monibahmed\s+x86_64-linux\s+target\s`).MatchString(r.Stdout) {
		t.Errorf("mage targets:\n%s", r.Stdout)
	}
}

// copyingFromBuildHost starts a deployment of host, built on builder, and
// returns once it copies (3 MiB over a 2 Mbit/s link: a few seconds).
func copyingFromBuildHost(t *testing.T, f *fixture, host, builder string) (*exec.Cmd, *syncBuilder) {
	t.Helper()
	buildsOnForeignHost(t, f, host, builder, 3)
	ctx := context.Background()
	if err := f.lab.Shape(ctx, host, lab.Link{RateMbit: 2}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.lab.Shape(ctx, host, lab.Link{}) })
	cmd, out := startMage(t, f, host+": copy", "deploy", host, "-", "-lab")
	t.Cleanup(func() { cmd.Process.Kill() })
	return cmd, out
}

// The system built on a build host is rooted there until the deployment// The system built on a build host is rooted there until the deployment
// ends: a garbage collection on the build host (its nix.gc.automatic,
// someone's nix-collect-garbage) between the build and the copy cannot
// take it away. (During the copy, Nix's runtime roots, the command line of
// the build host's `nix copy`, hold it anyway.) After the deployment the
// root is gone again.
func TestBuildHostRootsSystem(t *testing.T) {
	f := newFixture(t)
	const host, builder = "media-center", "dev-workstation"
	cmd, out := copyingFromBuildHost(t, f, host, builder)
	// The builder's indirect roots (its own /nix) that point into a
	// deployment's directory, and what they hold.
	roots := f.exec(builder, `for l in /nix/var/nix/gcroots/auto/*; do r=$(readlink "$l"); case $r in /tmp/nixos-config-run.*) [ -L "$r" ] && echo "$r" "$(readlink "$r")";; esac; done; true`)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("deploy: %v\n%s", err, out.String())
	}
	system := f.current(host)
	fields := strings.Fields(roots)
	if f.generation(host) != 1 || len(fields) != 2 || fields[1] != system {
		t.Fatalf("generation %d; the build host's roots into a deployment's directory during the copy: %q, want one holding %s\n%s", f.generation(host), roots, system, out.String())
	}
	if f.exec(builder, "test -e "+fields[0]+" && echo left || true") == "left" {
		t.Errorf("the root %s is left on the build host after the deployment", fields[0])
	}
	if left := runDirs(f, builder); left != "" {
		t.Errorf("the deployment's directory is left on the build host: %s", left)
	}
	f.exec(builder, "nix-store --gc >/dev/null 2>&1")
	if validOn(f, builder, system) {
		t.Errorf("the system is still rooted on the build host after the deployment: %s", f.exec(builder, "nix-store --query --roots "+system))
	}
}

// A build that fails on a build host: one line naming the builder and the
// derivation, the builder's log below it, the target unchanged.
func TestBuildFailsOnBuildHost(t *testing.T) {
	f := newFixture(t)
	const host, builder = "media-center", "dev-workstation"
	buildsOnForeignHost(t, f, host, builder, 1)
	f.setConfig(host, `lab.simulate.build.failure = "simulated: remote make: *** [all] Error 2";`)
	f.commit("broken on the build host")
	r := f.mage("deploy", host, "-", "-lab")
	failsWith(t, r, "simulated: remote make: *** [all] Error 2", "fix the package or configuration")
	if !regexp.MustCompile(`media-center: build: build failed on dev-workstation: [^\n]*/nix/store/[0-9a-z]{32}-nixos-system-media-center-[^\n]*\.drv[^\n]*exit code 1`).MatchString(r.Stdout) {
		t.Errorf("the build failure is not one line naming the build host, the derivation and the exit code:\n%s", r.Stdout)
	}
	if strings.Contains(r.Stdout, host+": copy") || f.generation(host) != 0 {
		t.Fatalf("copied or activated:\n%s", r.Combined())
	}
	if left := runDirs(f, builder); left != "" {
		t.Errorf("the deployment's directory is left on the build host: %s", left)
	}
}

// Two targets built on one build host whose sshd allows two sessions per
// connection (MaxSessions; 10 by default): their builds, bridges and
// copies share the run's one connection there, wait for sessions, and
// both deploy.
func TestBuildHostFewSessions(t *testing.T) {
	f := newFixture(t)
	const builder = "dev-workstation"
	buildsOnForeignHost(t, f, "media-center", builder, 2)
	buildsOnForeignHost(t, f, "lab-server", builder, 2)
	ctx := context.Background()
	if err := f.lab.SSHDOption(ctx, builder, "MaxSessions", "2"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.lab.SSHDOption(ctx, builder, "MaxSessions", lab.MaxSessions) })
	r := f.mage("deployAll", "-lab", "-on=media-center,lab-server")
	succeeds(t, r)
	for _, host := range []string{"media-center", "lab-server"} {
		if f.generation(host) != 1 || !validOn(f, builder, f.current(host)) {
			t.Errorf("%s: generation %d, built on %s: %v\n%s", host, f.generation(host), builder, validOn(f, builder, f.current(host)), r.Combined())
		}
	}
}

// runDirs lists the deployments' directories on a lab host (its /tmp).
func runDirs(f *fixture, host string) string {
	return f.exec(host, "ls -d /tmp/nixos-config-run.* 2>/dev/null || true")
}

// A deployer killed during the copy from a build host leaves no root
// there: the directory holding it ends with the deployer's connection.
func TestBuildHostKilledDeployerLeavesNoRoot(t *testing.T) {
	f := newFixture(t)
	const host, builder = "media-center", "dev-workstation"
	cmd, out := copyingFromBuildHost(t, f, host, builder)
	during := runDirs(f, builder)
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if during == "" {
		t.Fatalf("no deployment directory on the build host during the copy:\n%s", out.String())
	}
	deadline := time.Now().Add(30 * time.Second)
	for runDirs(f, builder) != "" {
		if time.Now().After(deadline) {
			t.Fatalf("the killed deployer's directory stays on the build host: %s (roots: %s)", runDirs(f, builder),
				f.exec(builder, "ls -l /nix/var/nix/gcroots/auto/ 2>&1"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if f.generation(host) != 0 {
		t.Fatalf("generation %d after a deployer killed during the copy", f.generation(host))
	}
	f.lab.Shape(context.Background(), host, lab.Link{})
	succeeds(t, f.mage("deploy", host, "-", "-lab"))
	if f.generation(host) != 1 || runDirs(f, builder) != "" {
		t.Fatalf("generation %d, directories left on the build host: %q", f.generation(host), runDirs(f, builder))
	}
}

// A build host whose sshd forwards no sockets cannot hand the system over:
// the failure names the sshd setting, and the target is unchanged.
func TestBuildHostWithoutSocketForwarding(t *testing.T) {
	f := newFixture(t)
	const host, builder = "media-center", "dev-workstation"
	buildsOnForeignHost(t, f, host, builder, 1)
	ctx := context.Background()
	if err := f.lab.SSHDOption(ctx, builder, "AllowStreamLocalForwarding", "no"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.lab.SSHDOption(ctx, builder, "AllowStreamLocalForwarding", "") })
	r := f.mage("deploy", host, "-", "-lab")
	failsWith(t, r, host+": copy: the build host dev-workstation refused to forward a socket to this machine", "AllowStreamLocalForwarding", "-buildon=target", "the target is unchanged")
	if f.generation(host) != 0 {
		t.Fatalf("generation %d", f.generation(host))
	}
}
