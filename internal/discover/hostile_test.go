package discover

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	xknownhosts "golang.org/x/crypto/ssh/knownhosts"

	"github.com/monibahmed/nixos-config/internal/inventory"
	"github.com/monibahmed/nixos-config/internal/testutil/hostile"
	"github.com/monibahmed/nixos-config/internal/ui"
)

// These tests scan hostile SSH servers on loopback: each accepts any key and
// answers the probe the way an attacker on the LAN would.

const hostTimeout = 2 * time.Second

func identity(t *testing.T) string {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "id_ed25519")
	if err := os.WriteFile(p, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func serve(t *testing.T, b hostile.Behaviour) *hostile.Server {
	t.Helper()
	s, err := hostile.Listen("127.0.0.1:0", b)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func port(t *testing.T, s *hostile.Server) int {
	_, p, _ := net.SplitHostPort(s.Addr)
	n, _ := strconv.Atoi(p)
	return n
}

// scanOne scans the server and returns what discovery reports of it, and
// how long the scan took.
func scanOne(t *testing.T, s *hostile.Server, knownHosts string, inv *inventory.Inventory) (Host, *Result, time.Duration) {
	t.Helper()
	if knownHosts == "" {
		knownHosts = filepath.Join(t.TempDir(), "known_hosts")
	}
	start := time.Now()
	res, err := Scan(context.Background(), []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, inv, Options{
		Port: port(t, s), User: "monibahmed", KnownHosts: []string{knownHosts}, Identities: []string{identity(t)},
		Timeout: time.Second, HostTimeout: hostTimeout})
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Hosts) != 1 {
		t.Fatalf("hosts: %+v", res.Hosts)
	}
	assertClean(t, res)
	return res.Hosts[0], res, took
}

// assertClean: no string in the result carries a control character, and
// none is longer than the bounds.
func assertClean(t *testing.T, res *Result) {
	t.Helper()
	var walk func(v reflect.Value, path string)
	walk = func(v reflect.Value, path string) {
		switch v.Kind() {
		case reflect.String:
			if s := v.String(); !ui.IsClean(s) || len(s) > 1024 {
				t.Errorf("%s is not clean or too long: %q", path, s[:min(len(s), 200)])
			}
		case reflect.Struct:
			for i := 0; i < v.NumField(); i++ {
				walk(v.Field(i), path+"."+v.Type().Field(i).Name)
			}
		case reflect.Slice:
			for i := 0; i < v.Len(); i++ {
				walk(v.Index(i), path+"["+strconv.Itoa(i)+"]")
			}
		}
	}
	walk(reflect.ValueOf(*res), "result")
	if data, err := json.Marshal(res); err != nil || strings.ContainsAny(string(data), "\x1b\a\r") {
		t.Errorf("JSON: %v %q", err, data)
	}
}

func hasNote(h Host, part string) bool {
	for _, n := range h.Notes {
		if strings.Contains(n, part) {
			return true
		}
	}
	return false
}

// Two phases (handshake, probe) of hostTimeout each, and some slack.
const bound = 2*hostTimeout + 2*time.Second

func TestHostileEndlessProbeOutput(t *testing.T) {
	s := serve(t, hostile.Behaviour{Answer: hostile.Endless("A")})
	h, _, took := scanOne(t, s, "", nil)
	if !h.LoggedIn || h.Hostname != "" || !hasNote(h, "more than 4096 bytes") || !hasNote(h, "no complete hostname line") {
		t.Errorf("host: %+v", h)
	}
	if took > bound {
		t.Errorf("took %v", took)
	}
	t.Logf("the server sent %d bytes; the scan took %v", s.Sent.Load(), took)
}

func TestHostileEscapesInBannerAndProbe(t *testing.T) {
	s := serve(t, hostile.Behaviour{
		Answer: hostile.Reply("evil\x1b]0;pwned\a\x1b[2J\rlab-server\nnixos=yes\nversion=26.11\x1b[8m\nprofile=system--3-link\n"),
	})
	h, _, _ := scanOne(t, s, "", nil)
	if h.Hostname != "" || !hasNote(h, `reports an invalid hostname, ignored: evil\x1b]0;pwned\a\x1b[2J\rlab-server`) {
		t.Errorf("hostname: %+v", h)
	}
	if !h.NixOS || h.Version != "" || !hasNote(h, `invalid NixOS version, ignored: 26.11\x1b[8m`) {
		t.Errorf("version: %+v", h)
	}
	if h.Generation != 0 || !hasNote(h, "invalid system profile link, ignored: system--3-link") {
		t.Errorf("generation: %+v", h)
	}
}

func TestHostileEscapesInBanner(t *testing.T) {
	s := serve(t, hostile.Behaviour{Banner: "SSH-2.0-evil\x1b]0;pwned\a\x1b[2J\x9b31m"})
	h, _, _ := scanOne(t, s, "", nil)
	if h.SSHVersion != `SSH-2.0-evil\x1b]0;pwned\a\x1b[2J\x9b31m` || h.LoggedIn {
		t.Errorf("host: %+v", h)
	}
}

func TestHostileHugeHostname(t *testing.T) {
	s := serve(t, hostile.Behaviour{Answer: hostile.Reply(strings.Repeat("h", 100<<20) + "\nnixos=yes\n")})
	h, _, took := scanOne(t, s, "", nil)
	if h.Hostname != "" || h.NixOS || !hasNote(h, "more than 4096 bytes") {
		t.Errorf("host: %+v", h)
	}
	if took > bound {
		t.Errorf("took %v", took)
	}
}

func TestHostileGenerationOutOfRange(t *testing.T) {
	s := serve(t, hostile.Behaviour{Answer: hostile.Reply("box\nnixos=yes\nversion=26.11.20260616.567a49d (Xantusia)\nprofile=system-999999999999-link\n")})
	h, _, _ := scanOne(t, s, "", nil)
	if h.Hostname != "box" || h.Version != "26.11.20260616.567a49d (Xantusia)" || h.Generation != 0 || !hasNote(h, "system-999999999999-link") {
		t.Errorf("host: %+v", h)
	}
}

func TestHostileSilentProbe(t *testing.T) {
	s := serve(t, hostile.Behaviour{}) // the probe never answers
	h, _, took := scanOne(t, s, "", nil)
	if h.LoggedIn || !strings.Contains(h.AuthError, "the probe did not answer within 2s") {
		t.Errorf("host: %+v", h)
	}
	if took > bound || took < hostTimeout {
		t.Errorf("took %v", took)
	}
}

func TestHostileProbeEndsLate(t *testing.T) {
	// A complete answer, then the command never ends: the facts count.
	s := serve(t, hostile.Behaviour{Answer: hostile.Slowly("box\nnixos=yes\n", time.Hour)})
	h, _, took := scanOne(t, s, "", nil)
	if !h.LoggedIn || h.Hostname != "box" || !h.NixOS || !hasNote(h, "did not finish within") || took > bound {
		t.Errorf("host: %+v after %v", h, took)
	}
}

func TestHostileEndlessBanner(t *testing.T) {
	s := serve(t, hostile.Behaviour{RawLine: "\x1b[2J" + strings.Repeat("x", 1000)})
	h, _, took := scanOne(t, s, "", nil)
	if h.SSHVersion != "" || h.LoggedIn || h.AuthError != "not an SSH server (no SSH identification line)" {
		t.Errorf("host: %+v", h)
	}
	if took > bound {
		t.Errorf("took %v", took)
	}
}

func knownHostsFile(t *testing.T, lines ...string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func authorized(k ssh.PublicKey) string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))
}

func TestKeyKnownForAnotherAddress(t *testing.T) {
	s := serve(t, hostile.Behaviour{Answer: hostile.Reply("lab-server\nnixos=yes\n")})
	kh := knownHostsFile(t, "10.77.0.12 "+authorized(s.Key))

	// Not in the inventory: a note says where the key is known.
	h, _, _ := scanOne(t, s, kh, nil)
	if h.KeyStatus != KeyUnknown || strings.Join(h.KeyKnownFor, ",") != "10.77.0.12" ||
		!hasNote(h, "host key unknown at 127.0.0.1, but known_hosts has it for 10.77.0.12: the host moved, or something answers with a copy of its key (spoofing)") {
		t.Errorf("host: %+v", h)
	}

	// A target at that address: matched by its key, and said so.
	inv := &inventory.Inventory{Targets: []inventory.Target{{Name: "media-center", Facts: inventory.Facts{Address: "10.77.0.12"}}}}
	h, res, _ := scanOne(t, s, kh, inv)
	if h.Target != "media-center" || h.MatchBy != "host key" || !hasNote(h, "media-center moved? Its host key is unknown at 127.0.0.1 but known for 10.77.0.12") || len(res.NotFound) != 0 {
		t.Errorf("host: %+v", h)
	}
}

func TestHostnameClaimWithAnotherKey(t *testing.T) {
	s := serve(t, hostile.Behaviour{Answer: hostile.Reply("lab-server\nnixos=yes\n")})
	inv := &inventory.Inventory{Targets: []inventory.Target{{Name: "lab-server", Facts: inventory.Facts{Address: "10.77.0.11"}}}}
	h, _, _ := scanOne(t, s, "", inv)
	if h.Target != "lab-server" || h.MatchBy != "hostname" || !hasNote(h, "calls itself lab-server, but its host key is not the one known_hosts has for lab-server (10.77.0.11)") {
		t.Errorf("host: %+v", h)
	}
}

func TestKeyTypeMismatchIsAHostKeyProblem(t *testing.T) {
	s := serve(t, hostile.Behaviour{Answer: hostile.Reply("box\n")}) // ed25519 only
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := ssh.NewPublicKey(&priv.PublicKey)
	kh := knownHostsFile(t, "[127.0.0.1]:"+strconv.Itoa(port(t, s))+" "+authorized(other))
	h, _, _ := scanOne(t, s, kh, nil)
	fp := ssh.FingerprintSHA256(s.Key)
	if h.KeyStatus != KeyOtherType || h.Fingerprint != fp || h.LoggedIn || h.AuthError != "host key type mismatch: not logged in" {
		t.Errorf("host: %+v", h)
	}
	if !hasNote(h, "host key problem: known_hosts has only ecdsa-sha2-nistp256 for 127.0.0.1, but the host offers only ssh-ed25519 ("+fp+")") ||
		!hasNote(h, "ssh-keyscan -t ed25519 127.0.0.1 >> "+kh) || hasNote(h, "sshd runs") {
		t.Errorf("notes: %q", h.Notes)
	}
}

func TestValidators(t *testing.T) {
	for s, ok := range map[string]bool{"lab-server": true, "a.b.c": true, "node_4": true, "": false, "-x": false, "a..b": false,
		strings.Repeat("a", 64): false, "evil\x1b": false, "has space": false} {
		if ValidHostname(s) != ok {
			t.Errorf("ValidHostname(%q) != %v", s, ok)
		}
	}
	for s, g := range map[string]int{"system-3-link": 3, "system--3-link": 0, "system-0-link": 0, "system-03-link": 0,
		"system-999999999999-link": 0, "system-1000000-link": 0, "system-999999-link": 999999, "/nix/var/nix/profiles/system-3-link": 0, "system-3-link\n": 0} {
		if generationOf(s) != g {
			t.Errorf("generationOf(%q) = %d, want %d", s, generationOf(s), g)
		}
	}
}

func TestChangedKeyKnownForAnotherAddress(t *testing.T) {
	s := serve(t, hostile.Behaviour{Answer: hostile.Reply("box\n")})
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	otherKey, _ := ssh.NewSignerFromKey(other)
	kh := knownHostsFile(t,
		"[127.0.0.1]:"+strconv.Itoa(port(t, s))+" "+authorized(otherKey.PublicKey()),
		"10.77.0.13 "+authorized(s.Key))
	h, _, _ := scanOne(t, s, kh, nil)
	if h.KeyStatus != KeyChanged || h.LoggedIn || strings.Join(h.KeyKnownFor, ",") != "10.77.0.13" ||
		!hasNote(h, "host key changed at 127.0.0.1, and known_hosts has the key it presents for 10.77.0.13: machines swapped addresses") {
		t.Errorf("host: %+v", h)
	}
}

func TestKeyKnownForAHashedEntry(t *testing.T) {
	s := serve(t, hostile.Behaviour{Answer: hostile.Reply("box\n")})
	kh := knownHostsFile(t, "# comment", "garbage line", xknownhosts.HashHostname("10.77.0.14")+" "+authorized(s.Key))
	h, _, _ := scanOne(t, s, kh, nil)
	if want := "a hashed entry (" + kh + ":3)"; strings.Join(h.KeyKnownFor, ",") != want {
		t.Errorf("known for %q, want %q", h.KeyKnownFor, want)
	}
}
