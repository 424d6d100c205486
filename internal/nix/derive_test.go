package nix

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/monibahmed/nixos-config/internal/run"
	"github.com/monibahmed/nixos-config/internal/testutil"
)

// What `nix show-config` (2.8) and `nix config show` (2.26, 2.34) print,
// abridged; the same lines in every version.
const showConfig = `auto-optimise-store = false
builders = @/etc/nix/machines
extra-platforms = i686-linux x86_64-v1-linux x86_64-v2-linux x86_64-v3-linux
system = x86_64-linux
system-features = benchmark big-parallel kvm nixos-test
`

func TestParsePlatforms(t *testing.T) {
	p, err := ParsePlatforms(showConfig)
	if err != nil {
		t.Fatal(err)
	}
	if !p.CanBuild("x86_64-linux") || !p.CanBuild("i686-linux") || p.CanBuild("aarch64-linux") {
		t.Fatalf("%+v", p)
	}
	if p.String() != "x86_64-linux (also i686-linux)" {
		t.Errorf("String: %q", p.String())
	}
	// The machines file of `builders = @/etc/nix/machines`.
	p, err = ParsePlatforms(showConfig + MachinesMarker + "\n# comment\nssh://pi aarch64-linux,armv7l-linux /k 4\n\nssh-ng://x86 - /k\n")
	if err != nil {
		t.Fatal(err)
	}
	if !p.CanBuild("aarch64-linux") || !p.CanBuild("armv7l-linux") || p.CanBuild("riscv64-linux") {
		t.Fatalf("machines file ignored: %+v", p)
	}
	// Inline builders.
	p, _ = ParsePlatforms(strings.Replace(showConfig, "builders = @/etc/nix/machines", "builders = ssh://a aarch64-linux ; ssh://b riscv64-linux", 1))
	if !p.CanBuild("aarch64-linux") || !p.CanBuild("riscv64-linux") {
		t.Fatalf("inline builders ignored: %+v", p)
	}
	if _, err := ParsePlatforms("garbage\n"); err == nil {
		t.Fatal("no system accepted")
	}
}

func TestPlatformMismatch(t *testing.T) {
	for _, msg := range []string{
		// Nix 2.8 and 2.26.
		"error: a '\x1b[35;1maarch64-linux\x1b[0m' with features {} is required to build '/nix/store/sq08qh9350yizwa8lij5ji3njbhrwb42-tst16.drv', but I am a 'x86_64-linux' with features {benchmark, big-parallel, kvm, nixos-test}",
		// Nix 2.34.
		"Cannot build '/nix/store/sq08qh9350yizwa8lij5ji3njbhrwb42-tst16.drv'.\nReason: \x1b[31;1mplatform mismatch\x1b[0m\nRequired system: '\x1b[35;1maarch64-linux\x1b[0m'\nCurrent system: 'x86_64-linux'",
	} {
		if sys, ok := PlatformMismatch(msg); !ok || sys != "aarch64-linux" {
			t.Errorf("%q: %q %v", msg, sys, ok)
		}
	}
	if _, ok := PlatformMismatch("builder for '/nix/store/x.drv' failed with exit code 1"); ok {
		t.Error("a build failure taken for a platform mismatch")
	}
}

func TestCopyArgs(t *testing.T) {
	rec := &recorder{}
	n := Nix{Runner: rec}
	_ = n.Copy(context.Background(), []string{"/nix/store/x.drv"}, CopyOptions{To: "unix:///b", Derivation: true, NoCheckSigs: true}, nil)
	got := strings.Join(rec.args, " ")
	if !strings.Contains(got, "copy --log-format internal-json --to unix:///b --derivation --no-check-sigs /nix/store/x.drv") {
		t.Fatalf("args: %s", got)
	}
}

type recorder struct{ args []string }

func (r *recorder) Run(ctx context.Context, c run.Cmd) error {
	r.args = append([]string{c.Name}, c.Args...)
	return nil
}

// One evaluation gives every system's derivation, output and system
// without building it; nix-store --realise builds it (Nix on this machine).
func TestDerivationsAndRealise(t *testing.T) {
	testutil.RequireTools(t, "nix", "nix-store", "git")
	repo := testutil.CopyRepo(t)
	ctx := context.Background()
	n := Nix{Runner: run.Exec{}}
	f := Flake{Dir: repo, Nixpkgs: filepath.Join(repo, DoubleDir)}
	p := &LogParser{}
	ds, err := n.Derivations(ctx, f, []string{"lab-server", "media-center"}, p)
	if err != nil {
		t.Fatalf("%v %v", err, p.Errors())
	}
	d := ds["media-center"]
	if !strings.HasSuffix(d.Drv, "-nixos-system-media-center-26.11pre-double.drv") || d.System != "x86_64-linux" || !strings.HasSuffix(d.Out, "-nixos-system-media-center-26.11pre-double") {
		t.Fatalf("%+v", d)
	}
	if _, err := os.Stat(d.Drv); err != nil {
		t.Fatalf("the derivation is not in the store: %v", err)
	}
	// A system of another platform evaluates here all the same.
	testutil.Edit(t, repo, "targets/media-center/target.json", `"x86_64-linux"`, `"aarch64-linux"`)
	testutil.Edit(t, repo, "targets/media-center/hardware-configuration.nix", `"x86_64-linux"`, `"aarch64-linux"`)
	testutil.Git(t, repo, "add", "-A")
	ds, err = n.Derivations(ctx, f, []string{"media-center"}, p)
	if err != nil || ds["media-center"].System != "aarch64-linux" {
		t.Fatalf("%+v %v", ds, err)
	}
	// ... and cannot be built here.
	p = &LogParser{}
	_, err = n.Realise(ctx, f, []string{ds["media-center"].Drv}, p)
	var text []string
	for _, e := range p.Errors() {
		text = append(text, e.Message)
	}
	if sys, ok := PlatformMismatch(strings.Join(text, "\n")); err == nil || !ok || sys != "aarch64-linux" {
		t.Fatalf("realise of an aarch64 system: %v %q", err, text)
	}
	plat, err := n.Platforms(ctx)
	if err != nil || plat.System == "" || plat.CanBuild("aarch64-linux") != false {
		t.Fatalf("platforms: %+v %v", plat, err)
	}
	if out, _ := exec.Command("uname", "-m").Output(); strings.TrimSpace(string(out)) == "x86_64" && !plat.CanBuild("x86_64-linux") {
		t.Fatalf("platforms: %+v", plat)
	}
}
