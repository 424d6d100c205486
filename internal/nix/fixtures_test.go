package nix

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// The fixtures in testdata/<version>/ were recorded in fresh Debian root
// file systems (bookworm: Nix 2.8.0, trixie: 2.26.3, sid: 2.34.8) against
// lab targets, with the commands the toolkit runs. Every parser and
// classifier must give the same answer for each version.

func versions(t *testing.T) []string {
	t.Helper()
	dirs, err := filepath.Glob("testdata/*/version.txt")
	if err != nil || len(dirs) < 3 {
		t.Fatalf("fixtures of three Nix versions expected, found %v (%v)", dirs, err)
	}
	var out []string
	for _, d := range dirs {
		out = append(out, filepath.Base(filepath.Dir(d)))
	}
	sort.Strings(out)
	return out
}

func fixture(t *testing.T, version, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", version, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func hasFixture(version, name string) bool {
	_, err := os.Stat(filepath.Join("testdata", version, name))
	return err == nil
}

// parse feeds recorded internal-json output to a LogParser.
func parse(t *testing.T, version, name string) *LogParser {
	t.Helper()
	p := &LogParser{}
	if _, err := p.Write([]byte(fixture(t, version, name))); err != nil {
		t.Fatal(err)
	}
	return p
}

// copyText is what the deploy hands to ClassifyStoreError: Nix's error
// messages and the plain lines around them.
func copyText(p *LogParser) string {
	var text []string
	for _, e := range p.Errors() {
		text = append(text, e.Message)
	}
	return strings.Join(append(text, p.Plain()...), "\n")
}

func TestFixtureVersions(t *testing.T) {
	want := map[string]bool{"2.8.0": true, "2.26.3": true, "2.34.8": true}
	for _, v := range versions(t) {
		got, err := ParseVersion(fixture(t, v, "version.txt"))
		if err != nil || got.String() != v {
			t.Errorf("%s: version.txt says %v (%v)", v, got, err)
		}
		delete(want, v)
	}
	if len(want) > 0 {
		t.Errorf("no fixtures for %v", want)
	}
}

func TestFixtureUntrustedCopy(t *testing.T) {
	for _, v := range versions(t) {
		p := parse(t, v, "copy-untrusted.internal-json")
		if k := ClassifyStoreError(copyText(p)); k != StoreUntrusted {
			t.Errorf("%s: internal-json classified %q", v, k)
		}
		if k := ClassifyStoreError(fixture(t, v, "copy-untrusted.stderr")); k != StoreUntrusted {
			t.Errorf("%s: plain output classified %q", v, k)
		}
		if line := StoreErrorLine(copyText(p)); !strings.Contains(line, "cannot add path '/nix/store/") || strings.Contains(line, "\x1b") {
			t.Errorf("%s: quoted line %q", v, line)
		}
	}
}

// A full /nix on the target: 2.8 and 2.26 report the full disk; the 2.34
// daemon disconnects when it cannot even open its database (1 MiB disk:
// less than the 8 MiB Nix reserves), and its log says why. The deploy
// confirms "daemon disconnected" with the free space it measures.
func TestFixtureFullDisk(t *testing.T) {
	for _, v := range versions(t) {
		for _, size := range []string{"1m", "10m"} {
			p := parse(t, v, "copy-diskfull-"+size+".internal-json")
			k := ClassifyStoreError(copyText(p))
			switch k {
			case StoreDiskFull:
			case StoreDaemonDisconnected:
				log := fixture(t, v, "daemon-diskfull-"+size+".log")
				if ClassifyStoreError(log) != StoreDiskFull {
					t.Errorf("%s %s: the daemon's log does not show the full disk:\n%s", v, size, log)
				}
				// df on the target: nothing available.
				if !LooksFull(0, 0) {
					t.Errorf("%s: an empty disk must look full", v)
				}
			default:
				t.Errorf("%s %s: copy to a full disk classified %q:\n%s", v, size, k, copyText(p))
			}
			if k.Retry() {
				t.Errorf("%s %s: %q must not be retried", v, size, k)
			}
			// The target's own nix-store over SSH (what the deploy asks
			// before copying).
			if out := fixture(t, v, "check-validity-diskfull-"+size+".stderr"); strings.TrimSpace(out) != "" {
				if k := ClassifyStoreError(out); k != StoreDaemonDisconnected && k != StoreDiskFull {
					t.Errorf("%s %s: nix-store on a full target classified %q: %s", v, size, k, out)
				}
			}
		}
	}
	if hasFixture("2.34.8", "copy-diskfull-1m.internal-json") {
		if k := ClassifyStoreError(copyText(parse(t, "2.34.8", "copy-diskfull-1m.internal-json"))); k != StoreDaemonDisconnected {
			t.Errorf("2.34 on a 1 MiB disk: %q, want the daemon disconnect this test is about", k)
		}
	}
}

func TestClassifyStoreErrorOthers(t *testing.T) {
	for text, want := range map[string]StoreErrorKind{
		"Host key verification failed.":                                                                                StoreHostKey,
		"monibahmed@10.77.0.10: Permission denied (publickey).":                                                        StoreAuth,
		"ssh: connect to host 10.77.0.10 port 22: Connection refused":                                                  StoreNetwork,
		"ssh: connect to host 10.77.0.10 port 22: No route to host":                                                    StoreNetwork,
		"bash: line 1: nix-daemon: command not found":                                                                  StoreNoNix,
		"cannot connect to socket at '/nix/var/nix/daemon-socket/socket': Connection refused":                          StoreNoDaemon,
		"error: cannot open connection to remote store 'daemon': error: read of 32768 bytes: Connection reset by peer": StoreDaemonDisconnected,
		"something else entirely":                                                                                      StoreUnknown,
	} {
		if got := ClassifyStoreError(text); got != want {
			t.Errorf("%q: %q, want %q", text, got, want)
		}
	}
	if !StoreNetwork.Retry() || StoreUntrusted.Retry() {
		t.Error("only network trouble is retried")
	}
	if LooksFull(100<<20, 10<<20) || !LooksFull(12<<20, 5<<20) {
		t.Error("LooksFull must keep Nix's 8 MiB reserve")
	}
}

// Build failures: one line that names the derivation and the exit code, and
// the derivation's log tail found by it.
func TestFixtureBuildFailure(t *testing.T) {
	for _, v := range versions(t) {
		p := parse(t, v, "build-failure.internal-json")
		errs := p.Errors()
		if len(errs) == 0 {
			t.Fatalf("%s: no error", v)
		}
		e := errs[len(errs)-1]
		if strings.Contains(e.Message, "\n") || !strings.Contains(e.Message, "exit code 1") || !strings.Contains(e.Message, "nixos-system-media-center-26.11pre-double.drv") {
			t.Errorf("%s: message %q", v, e.Message)
		}
		if strings.Contains(e.Message, "Output paths") {
			t.Errorf("%s: output paths in the one-line cause: %q", v, e.Message)
		}
		if !strings.HasSuffix(e.Drv, "-nixos-system-media-center-26.11pre-double.drv") {
			t.Errorf("%s: drv %q", v, e.Drv)
		}
		if log := p.BuildLog(e.Drv); len(log) == 0 || log[len(log)-1] != "simulated: make: *** [all] Error 2" {
			t.Errorf("%s: build log %q", v, log)
		}
		if Environment(fixture(t, v, "build-failure.internal-json")) != nil {
			t.Errorf("%s: a build failure taken for a problem of the installation", v)
		}
		// The same failure, plain (mage check, nix build by hand).
		pe := ParseError(fixture(t, v, "build-failure.stderr"), "")
		if !strings.Contains(pe.Message, "exit code 1") || !strings.HasSuffix(pe.Drv, "media-center-26.11pre-double.drv") {
			t.Errorf("%s: plain build failure %+v", v, pe)
		}
	}
}

// Evaluation errors carry file:line:col once (2.26+ repeat them in "file").
func TestFixtureEvalErrorLocation(t *testing.T) {
	for _, v := range versions(t) {
		p := parse(t, v, "build-failures.internal-json")
		var e *Error
		for _, x := range p.Errors() {
			if x.File != "" {
				e = x.Rel("/tmp/r")
				break
			}
		}
		if e == nil {
			t.Fatalf("%s: no located error in %v", v, p.Errors())
		}
		if got := e.Error(); got != "targets/lab-server/configuration.nix:12:19: cannot add a string to an integer" {
			t.Errorf("%s: %q", v, got)
		}
		pe := ParseError(fixture(t, v, "flake-check-evalerror.stderr"), "/tmp/r")
		if got := pe.Error(); got != "targets/lab-server/configuration.nix:12:19: cannot add a string to an integer" {
			t.Errorf("%s: flake check: %q", v, got)
		}
		pe = ParseError(fixture(t, v, "parse-error.stderr"), "")
		if pe.File != "/tmp/bad.nix" || pe.Line != 1 || pe.Column != 7 || !strings.Contains(pe.Message, "syntax error") {
			t.Errorf("%s: parse error %+v", v, pe)
		}
	}
}

// Problems of the deploying machine's Nix are named as such, with the remedy.
func TestFixtureEnvironment(t *testing.T) {
	cases := map[string]EnvKind{
		"build-nixbld.stderr":                EnvBuildUsers,
		"build-nixbld.internal-json":         EnvBuildUsers,
		"nonroot-denied-parse.stderr":        EnvDaemonPermission,
		"nonroot-denied-flakecheck.stderr":   EnvDaemonPermission,
		"nonroot-denied-build.internal-json": EnvDaemonPermission,
		"nonroot-nodaemon-parse.stderr":      EnvStoreAccess,
		"nonroot-nodaemon-flakecheck.stderr": EnvStoreAccess,
		"features-disabled.stderr":           EnvFeatures,
	}
	for _, v := range versions(t) {
		for name, want := range cases {
			e := Environment(fixture(t, v, name))
			if e == nil || e.Kind != want {
				t.Errorf("%s %s: %+v, want %q", v, name, e, want)
				continue
			}
			msg := e.Error()
			if strings.Contains(msg, "parse error") || strings.Contains(msg, "syntax") || !strings.Contains(msg, "docs/troubleshooting.md#nix-on-this-machine") {
				t.Errorf("%s %s: %s", v, name, msg)
			}
		}
		if e := Environment(fixture(t, v, "nonroot-denied-parse.stderr")); e != nil && !strings.Contains(e.Error(), "nix-users") {
			t.Errorf("%s: the remedy must name the nix-users group: %s", v, e)
		}
		for _, name := range []string{"parse-error.stderr", "copy-untrusted.internal-json", "flake-check-evalerror.stderr"} {
			if e := Environment(fixture(t, v, name)); e != nil {
				t.Errorf("%s %s: taken for an installation problem: %v", v, name, e)
			}
		}
	}
}

// nix path-info --json in every format: array (2.8), object keyed by path
// (2.26), --json-format 2 keyed by base name (2.34).
func TestFixturePathInfo(t *testing.T) {
	for _, v := range versions(t) {
		top := strings.TrimSpace(strings.TrimPrefix(fixture(t, v, "closure-toplevel.txt"), "top "))
		want := strings.Fields(fixture(t, v, "closure-nix-store-qR.txt"))
		files := []string{"path-info-closure-r.json", "path-info-closure-rS.json"}
		if hasFixture(v, "path-info-closure-format2-r.json") {
			files = append(files, "path-info-closure-format2-r.json")
		}
		for _, f := range files {
			infos, err := parsePathInfo(fixture(t, v, f))
			if err != nil {
				t.Errorf("%s %s: %v", v, f, err)
				continue
			}
			var got []string
			byPath := map[string]PathInfo{}
			for _, i := range infos {
				got = append(got, i.Path)
				byPath[i.Path] = i
				if i.NarSize <= 0 {
					t.Errorf("%s %s: %s has no size", v, f, i.Path)
				}
			}
			if strings.Join(got, " ") != strings.Join(want, " ") {
				t.Errorf("%s %s: paths %v, want %v", v, f, got, want)
			}
			for _, i := range infos {
				for _, r := range i.References {
					if _, ok := byPath[r]; !ok {
						t.Errorf("%s %s: reference %q of %s is not a path of the closure", v, f, r, i.Path)
					}
				}
			}
			if len(byPath[top].References) < 2 {
				t.Errorf("%s %s: toplevel references %v", v, f, byPath[top].References)
			}
		}
		infos, err := parsePathInfo(fixture(t, v, "path-info-S.json"))
		if err != nil || len(infos) != 1 || infos[0].ClosureSize <= 0 {
			t.Errorf("%s: path-info -S: %+v %v", v, infos, err)
		}
		// What makes the toolkit fall back to the old flags.
		probe := fixture(t, v, "path-info-json-format-probe.stderr")
		supported := strings.Contains(probe, "probe rc=0")
		if supported != hasFixture(v, "path-info-closure-format2-r.json") || (!supported && !strings.Contains(probe, "--json-format")) {
			t.Errorf("%s: --json-format probe: %q", v, probe)
		}
	}
	if _, err := parsePathInfo(`{"info":{},"storeDir":"/nix/store","version":3}`); err == nil {
		t.Error("an unknown format version must be an error")
	}
}
