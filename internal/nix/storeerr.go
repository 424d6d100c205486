package nix

import (
	"regexp"
	"strings"
)

// StoreErrorKind is the cause of a failed operation on another machine's
// Nix store (nix copy --to ssh-ng://, or nix-store run there over SSH), as
// far as Nix's output tells it.
type StoreErrorKind string

// Kinds of store errors. Each is recognised by what Nix 2.8 to 2.34 have in
// common, never by one version's sentence (tests: fixtures_test.go, with
// output recorded from 2.8, 2.26 and 2.34 in testdata/).
const (
	// StoreUntrusted: the destination refuses paths without a signature
	// from this user (not a trusted user there). 2.8: "lacks a valid
	// signature"; 2.26+: "lacks a signature by a trusted key".
	StoreUntrusted StoreErrorKind = "untrusted"
	// StoreDiskFull: the destination ran out of space ("No space left on
	// device", SQLite's "database or disk is full").
	StoreDiskFull StoreErrorKind = "disk full"
	// StoreDaemonDisconnected: the destination's nix-daemon went away in
	// the middle ("Nix daemon disconnected unexpectedly", "unexpected
	// end-of-file"). Nix 2.34's daemon does this when /nix is full (it
	// cannot open its database journal; its own log says "database or disk
	// is full"): the caller must look at the free space on the target to
	// tell a full disk from a crashed daemon (LooksFull).
	StoreDaemonDisconnected StoreErrorKind = "daemon disconnected"
	// StoreNoDaemon: no nix-daemon answers on the destination's socket.
	StoreNoDaemon StoreErrorKind = "no daemon"
	// StoreNoNix: the destination has no Nix in the SSH user's PATH.
	StoreNoNix StoreErrorKind = "no nix"
	// StoreHostKey: OpenSSH refused the host key (Nix reaching a store
	// over ssh:// or ssh-ng:// itself, as the remote builders of a user's
	// nix.conf do; the toolkit's own copies go through its SSH bridge).
	StoreHostKey StoreErrorKind = "host key"
	// StoreAuth: OpenSSH could not log in.
	StoreAuth StoreErrorKind = "authentication"
	// StoreNetwork: the connection failed or broke.
	StoreNetwork StoreErrorKind = "network"
	// StoreUnknown: none of the above.
	StoreUnknown StoreErrorKind = ""
)

var storeErrorRules = []struct {
	kind StoreErrorKind
	re   *regexp.Regexp
}{
	// Order matters: a full disk can also break the connection, and an
	// untrusted path is never a network problem.
	{StoreUntrusted, regexp.MustCompile(`(?i)lacks a (valid )?signature|signature[^\n]*trusted key|not signed by a trusted key`)},
	{StoreDiskFull, regexp.MustCompile(`(?i)no space left on device|database or disk is full|disk quota exceeded`)},
	{StoreHostKey, regexp.MustCompile(`Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED|No [A-Za-z0-9-]+ host key is known`)},
	{StoreAuth, regexp.MustCompile(`Permission denied \((publickey|password|keyboard-interactive)[^)]*\)|Too many authentication failures`)},
	{StoreNoNix, regexp.MustCompile(`(nix-daemon|nix-store): (command )?not found|command not found: nix`)},
	{StoreNoDaemon, regexp.MustCompile(`daemon-socket/socket[^\n]*(No such file or directory|Connection refused)|cannot connect to (the )?daemon`)},
	// On the target itself (nix-store over SSH) the connection to its own
	// daemon is the "remote store 'daemon'"; 2.34 on a full disk: "read of
	// 32768 bytes: Connection reset by peer".
	{StoreDaemonDisconnected, regexp.MustCompile(`(?i)daemon disconnected|unexpected end-of-file|unexpected EOF|remote store '(daemon|unix://[^']*)'`)},
	{StoreNetwork, regexp.MustCompile(`(?i)connection (refused|reset|timed out|closed)|no route to host|network is unreachable|could not resolve hostname|broken pipe|operation timed out|cannot open connection to remote store`)},
}

// ClassifyStoreError maps the text of a failed store operation (Nix's
// error messages, and the plain lines OpenSSH printed) to its kind.
func ClassifyStoreError(text string) StoreErrorKind {
	text = StripANSI(text)
	for _, r := range storeErrorRules {
		if r.re.MatchString(text) {
			return r.kind
		}
	}
	return StoreUnknown
}

// Retry tells whether the same operation may succeed when tried again
// (transient network trouble); never for causes only the user can remove.
func (k StoreErrorKind) Retry() bool { return k == StoreNetwork }

// DaemonReservedBytes is the space Nix keeps reserved in its state
// directory (/nix/var/nix/db/reserved, the reserved-size setting's default
// of 8 MiB) so that it can still delete paths on a full disk. A target whose
// /nix has less free than this plus what is copied is full for Nix.
const DaemonReservedBytes = 8 << 20

// LooksFull tells whether a store with free bytes free cannot take need
// more bytes: what the caller checks after StoreDaemonDisconnected (and
// before copying) with the free space it measured on the target.
func LooksFull(free, need int64) bool {
	return free < need+DaemonReservedBytes
}

// StoreErrorLine is the line of text worth quoting with the kind: the
// first line a rule matched, without "error:" and escape sequences.
func StoreErrorLine(text string) string {
	text = StripANSI(text)
	for _, r := range storeErrorRules {
		if loc := r.re.FindStringIndex(text); loc != nil {
			start := strings.LastIndexByte(text[:loc[0]], '\n') + 1
			end := strings.IndexByte(text[loc[1]:], '\n')
			if end < 0 {
				end = len(text)
			} else {
				end += loc[1]
			}
			return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(text[start:end]), "error:"))
		}
	}
	return ""
}
