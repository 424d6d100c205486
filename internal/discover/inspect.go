package discover

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/skeema/knownhosts"
	"golang.org/x/crypto/ssh"
	xknownhosts "golang.org/x/crypto/ssh/knownhosts"

	"github.com/monibahmed/nixos-config/internal/sshx"
	"github.com/monibahmed/nixos-config/internal/target"
	"github.com/monibahmed/nixos-config/internal/trouble"
	"github.com/monibahmed/nixos-config/internal/ui"
)

// Limits on what a scanned host can make discovery read and keep. A host
// answers within Options.HostTimeout per phase or is cut off, and never
// makes discovery hold more than these few kilobytes of what it sends.
const (
	// MaxBanner is the longest identification line kept (RFC 4253 4.2).
	MaxBanner = 255
	// MaxProbeOutput is how much of the probe's output is read; the rest
	// is never read (the session is closed).
	MaxProbeOutput = 4 << 10
	// maxBannerRecord is how much of the connection's start is recorded
	// to find the identification line (x/crypto/ssh itself reads at most
	// 1024 lines of 255 bytes before it).
	maxBannerRecord = 8 << 10
	// MaxGeneration bounds believable system generation numbers (below
	// it), as for a deployment (internal/target).
	MaxGeneration = target.MaxGeneration
	// maxNote bounds a value from the host quoted in a note.
	maxNote = 64
)

// bannerConn records the start of what the server sends, until its
// identification line ("SSH-...") is complete, as the SSH library reads it.
type bannerConn struct {
	net.Conn
	mu   sync.Mutex
	buf  []byte
	done bool
}

func (c *bannerConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	if !c.done && n > 0 {
		room := maxBannerRecord - len(c.buf)
		c.buf = append(c.buf, p[:min(n, room)]...)
		if len(c.buf) >= maxBannerRecord || versionLine(c.buf) >= 0 {
			c.done = true
		}
	}
	c.mu.Unlock()
	return n, err
}

// versionLine is the offset of the first complete line starting with
// "SSH-" in b, or -1.
func versionLine(b []byte) int {
	off := 0
	for {
		nl := bytes.IndexByte(b[off:], '\n')
		if nl < 0 {
			return -1
		}
		if bytes.HasPrefix(b[off:], []byte("SSH-")) {
			return off
		}
		off += nl + 1
	}
}

// banner is the server's identification line, sanitized and bounded.
func (c *bannerConn) banner() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	off := versionLine(c.buf)
	if off < 0 {
		// Cut short (a timeout, or an endless line): whatever starts like one.
		if !bytes.HasPrefix(c.buf, []byte("SSH-")) {
			return ""
		}
		off = 0
	}
	line, _, _ := bytes.Cut(c.buf[off:], []byte("\n"))
	return ui.Sanitize(strings.TrimRight(string(line), "\r"), MaxBanner)
}

const probeScript = `hostname
if [ -e /etc/NIXOS ] || [ -e /run/current-system/nixos-version ]; then echo nixos=yes; else echo nixos=no; fi
echo "version=$(cat /run/current-system/nixos-version 2>/dev/null)"
echo "profile=$(readlink /nix/var/nix/profiles/system 2>/dev/null)"
`

// inspectHost reads the banner and host key, and logs in when our keys are
// accepted. It never sends a password, never forwards the agent, and never
// writes to known_hosts; with a changed, revoked or other-type host key it
// does not log in. The handshake and the probe are each bounded by
// o.HostTimeout and the probe's output by MaxProbeOutput.
func inspectHost(ctx context.Context, h *Host, o Options) {
	if o.Resolver != nil {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		if names, err := o.Resolver.LookupAddr(rctx, h.Address); err == nil && len(names) > 0 {
			name := strings.TrimSuffix(names[0], ".")
			if ValidHostname(name) {
				h.ReverseDNS = name
			} else {
				h.Notes = append(h.Notes, "reverse DNS gives an invalid host name, ignored: "+ui.Sanitize(name, maxNote))
			}
		}
		cancel()
	}
	hp := net.JoinHostPort(h.Address, strconv.Itoa(o.Port))
	d := net.Dialer{Timeout: min(3*time.Second, o.HostTimeout)}
	raw, err := d.DialContext(ctx, "tcp", hp)
	if err != nil {
		h.AuthError = "connection failed: " + ui.Sanitize(err.Error(), 200)
		return
	}
	conn := &bannerConn{Conn: raw}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	_ = conn.SetDeadline(time.Now().Add(o.HostTimeout))

	var files []string
	for _, f := range o.KnownHosts {
		if _, err := os.Stat(f); err == nil {
			files = append(files, f)
		}
	}
	db, dbErr := knownhosts.NewDB(files...)
	algos := allKeyAlgos
	var knownKeys []knownhosts.PublicKey
	if dbErr == nil {
		knownKeys = db.HostKeys(hp)
		if known := db.HostKeyAlgorithms(hp); len(known) > 0 {
			algos = known
		}
	}
	// No usable key still leaves the banner and the host key to report.
	auth, closeAgent, _ := sshx.AuthMethods(o.Identities, len(o.Identities) > 0)
	defer closeAgent()
	var presented ssh.PublicKey
	cfg := &ssh.ClientConfig{
		User: o.User,
		Auth: auth,
		HostKeyCallback: func(hostname string, remote net.Addr, key ssh.PublicKey) error {
			presented = key
			h.Fingerprint = ssh.FingerprintSHA256(key)
			if dbErr != nil {
				h.KeyStatus = KeyUnknown
				return nil
			}
			err := db.HostKeyCallback()(hostname, remote, key)
			var revoked *xknownhosts.RevokedError
			switch {
			case err == nil:
				h.KeyStatus = KeyKnown
			case errors.As(err, &revoked):
				h.KeyStatus = KeyRevoked
				return err
			case knownhosts.IsHostKeyChanged(err):
				h.KeyStatus = KeyChanged
				return err // possibly not the machine we think: do not log in
			default:
				h.KeyStatus = KeyUnknown
			}
			return nil
		},
		HostKeyAlgorithms: algos,
		Timeout:           o.HostTimeout,
	}
	sconn, chans, reqs, err := ssh.NewClientConn(conn, hp, cfg)
	h.SSHVersion = conn.banner()
	if (h.KeyStatus == KeyUnknown || h.KeyStatus == KeyChanged) && presented != nil {
		h.KeyKnownFor = knownElsewhere(files, presented, h.Address, o.Port)
	}
	if err != nil {
		var neg *ssh.AlgorithmNegotiationError
		switch {
		case errors.As(err, &neg) && neg.What == "host key" && len(knownKeys) > 0:
			otherKeyType(ctx, h, hp, knownKeys, files, o)
		case h.KeyStatus == KeyChanged:
			h.AuthError = "host key changed: not logged in"
		case h.KeyStatus == KeyRevoked:
			h.AuthError = "host key revoked in known_hosts: not logged in"
		case h.Fingerprint != "":
			h.AuthError = "our keys were not accepted for " + o.User
		case errors.Is(err, os.ErrDeadlineExceeded):
			h.AuthError = fmt.Sprintf("no SSH handshake within %v", o.HostTimeout)
		case h.SSHVersion == "":
			h.AuthError = "not an SSH server (no SSH identification line)"
		default:
			msg := strings.ReplaceAll(err.Error(), "ssh: handshake failed: ", "")
			h.AuthError = "SSH handshake failed: " + ui.Sanitize(strings.TrimPrefix(msg, "ssh: "), 200)
		}
		return
	}
	client := ssh.NewClient(sconn, chans, reqs)
	defer client.Close()
	// The probe gets its own time, and no more.
	deadline := time.Now().Add(o.HostTimeout)
	_ = conn.SetDeadline(deadline)
	out, cut, err := probe(client)
	// At the deadline the connection is cut, which ends the output like a
	// normal end would: the clock tells them apart.
	timedOut := !time.Now().Before(deadline) || errors.Is(err, os.ErrDeadlineExceeded)
	if len(out) == 0 && (err != nil || timedOut) {
		if timedOut {
			h.AuthError = fmt.Sprintf("logged in, but the probe did not answer within %v", o.HostTimeout)
		} else {
			h.AuthError = "logged in, but the probe failed: " + ui.Sanitize(err.Error(), 200)
		}
		return
	}
	h.LoggedIn = true
	if cut {
		h.Notes = append(h.Notes, fmt.Sprintf("answered the probe with more than %d bytes: the rest was not read", MaxProbeOutput))
	} else if timedOut {
		h.Notes = append(h.Notes, fmt.Sprintf("the probe did not finish within %v: its answer may be incomplete", o.HostTimeout))
	}
	parseProbe(h, out, cut)
}

// probe runs the probe script and reads at most MaxProbeOutput bytes of its
// output; cut tells that there was more. Standard error is discarded.
func probe(client *ssh.Client) (out []byte, cut bool, err error) {
	sess, err := client.NewSession()
	if err != nil {
		return nil, false, err
	}
	defer sess.Close()
	stdout, err := sess.StdoutPipe()
	if err != nil {
		return nil, false, err
	}
	// Through the login shell, whatever it is (sshx.PosixLine).
	if err := sess.Start(sshx.PosixLine(probeScript)); err != nil {
		return nil, false, err
	}
	out, err = io.ReadAll(io.LimitReader(stdout, MaxProbeOutput+1))
	if len(out) > MaxProbeOutput {
		return out[:MaxProbeOutput], true, nil
	}
	return out, false, err
}

// parseProbe takes the facts from the probe's output, validating each: what
// does not validate is not used, and is quoted (sanitized) in a note.
func parseProbe(h *Host, out []byte, cut bool) {
	lines := strings.Split(string(out), "\n")
	complete := len(lines) - 1 // the last one has no newline (yet)
	if !cut && len(out) > 0 && out[len(out)-1] != '\n' {
		complete = len(lines)
	}
	name := strings.TrimSuffix(lines[0], "\r")
	switch {
	case complete < 1:
		h.Notes = append(h.Notes, "sent no complete hostname line: "+ui.Sanitize(name, maxNote))
	case ValidHostname(name):
		h.Hostname = name
	default:
		h.Notes = append(h.Notes, "reports an invalid hostname, ignored: "+ui.Sanitize(name, maxNote))
	}
	var facts []string // the complete lines after the hostname
	if complete > 1 {
		facts = lines[1:complete]
	}
	seen := map[string]bool{}
	for _, l := range facts {
		k, v, _ := strings.Cut(strings.TrimSuffix(l, "\r"), "=")
		if seen[k] {
			continue
		}
		seen[k] = true
		switch k {
		case "nixos":
			h.NixOS = v == "yes"
		case "version":
			v = strings.TrimSpace(v)
			if validVersion(v) {
				h.Version = v
			} else if v != "" {
				h.Notes = append(h.Notes, "reports an invalid NixOS version, ignored: "+ui.Sanitize(v, maxNote))
			}
		case "profile":
			if v != "" {
				if g := generationOf(v); g > 0 {
					h.Generation = g
				} else {
					h.Notes = append(h.Notes, "reports an invalid system profile link, ignored: "+ui.Sanitize(v, maxNote))
				}
			}
		}
	}
}

var (
	hostLabel    = regexp.MustCompile(`^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$`)
	versionRE    = regexp.MustCompile(`^[0-9A-Za-z][0-9A-Za-z._+~-]{0,47}( \([A-Za-z0-9 ._-]{1,32}\))?$`)
	generationRE = regexp.MustCompile(`^system-([1-9][0-9]{0,8})-link$`)
	keyscanTypes = map[string]string{ssh.KeyAlgoED25519: "ed25519", ssh.KeyAlgoRSA: "rsa", ssh.KeyAlgoECDSA256: "ecdsa", ssh.KeyAlgoECDSA384: "ecdsa", ssh.KeyAlgoECDSA521: "ecdsa"}
	hostKeyFiles = map[string]string{"ed25519": "ed25519", "rsa": "rsa", "ecdsa": "ecdsa"}
	allKeyAlgos  = []string{ssh.KeyAlgoED25519, ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521, ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256}
)

// ValidHostname reports whether s is a host name (RFC 1123 labels, and
// underscores, as Linux allows): at most 253 characters.
func ValidHostname(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if !hostLabel.MatchString(l) {
			return false
		}
	}
	return true
}

// validVersion: what nixos-version prints, e.g. "26.11.20260616.567a49d (Xantusia)".
func validVersion(s string) bool { return versionRE.MatchString(s) }

// generationOf is the generation number of a profile link target
// ("system-42-link"), or 0 when it is not one or out of range.
func generationOf(link string) int {
	m := generationRE.FindStringSubmatch(link)
	if m == nil {
		return 0
	}
	n, err := strconv.Atoi(m[1])
	if err != nil || n < 1 || n >= MaxGeneration {
		return 0
	}
	return n
}

// otherKeyType handles a host that offers none of the key types known_hosts
// has for it: it fetches the key the host does offer (without trusting or
// logging in), and reports the mismatch as a host key problem.
func otherKeyType(ctx context.Context, h *Host, hp string, known []knownhosts.PublicKey, files []string, o Options) {
	h.KeyStatus = KeyOtherType
	h.AuthError = "host key type mismatch: not logged in"
	var knownTypes []string
	for _, k := range known {
		if t := k.Type(); !contains(knownTypes, t) {
			knownTypes = append(knownTypes, t)
		}
	}
	key := offeredKey(ctx, hp, o)
	offered, fp, scanType := "another key type", "fingerprint unknown", "ed25519"
	if key != nil {
		offered, fp = key.Type(), ssh.FingerprintSHA256(key)
		h.Fingerprint = fp
		if t, ok := keyscanTypes[key.Type()]; ok {
			scanType = t
		}
		h.KeyKnownFor = knownElsewhere(files, key, h.Address, o.Port)
	}
	kh := "~/.ssh/known_hosts"
	if len(files) > 0 {
		kh = files[0]
	}
	h.Notes = append(h.Notes, fmt.Sprintf("host key problem: known_hosts has only %s for %s, but the host offers only %s (%s): the machine was reinstalled or its SSH keys changed, or another machine answers at this address; not logged in. Verify the fingerprint on its console (ssh-keygen -lf /etc/ssh/ssh_host_%s_key.pub), then replace the entry: ssh-keygen -R %s -f %s; ssh-keyscan -t %s %s >> %s (%s)",
		strings.Join(knownTypes, ", "), h.Address, offered, fp, hostKeyFiles[scanType], h.Address, kh, scanType, h.Address, kh, trouble.See(trouble.HostKeys)))
}

// offeredKey does a second handshake, accepting any key type, only to learn
// the key the host offers; it stops right after and never authenticates.
func offeredKey(ctx context.Context, hp string, o Options) ssh.PublicKey {
	d := net.Dialer{Timeout: min(3*time.Second, o.HostTimeout)}
	raw, err := d.DialContext(ctx, "tcp", hp)
	if err != nil {
		return nil
	}
	defer raw.Close()
	stop := context.AfterFunc(ctx, func() { _ = raw.SetDeadline(time.Now()) })
	defer stop()
	_ = raw.SetDeadline(time.Now().Add(o.HostTimeout))
	var key ssh.PublicKey
	errStop := errors.New("key read")
	_, _, _, _ = ssh.NewClientConn(raw, hp, &ssh.ClientConfig{
		User: o.User,
		HostKeyCallback: func(_ string, _ net.Addr, k ssh.PublicKey) error {
			key = k
			return errStop
		},
		HostKeyAlgorithms: allKeyAlgos,
		Timeout:           o.HostTimeout,
	})
	return key
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
