package nix

import "strings"

// StoreError classifies what a store operation (nix copy, a daemon
// connection) failed of.
type StoreError int

// Classes of store errors.
const (
	StoreOther      StoreError = iota
	StoreUntrusted             // the destination refuses unsigned paths
	StoreDiskFull              // no space left
	StoreDaemonGone            // the daemon hung up mid-operation
)

// ClassifyStoreError reads Nix's error text. Several Nix versions word
// the same failure differently; each alternative names its versions.
func ClassifyStoreError(text string) StoreError {
	t := strings.ToLower(text)
	switch {
	// 2.8: "lacks a valid signature"; 2.26+: "lacks a signature by a trusted key".
	case strings.Contains(t, "lacks a valid signature"), strings.Contains(t, "lacks a signature by a trusted key"):
		return StoreUntrusted
	case strings.Contains(t, "no space left on device"), strings.Contains(t, "database or disk is full"):
		return StoreDiskFull
	// 2.34 on a full /nix: the daemon cannot open its journal and disconnects.
	case strings.Contains(t, "daemon disconnected unexpectedly"), strings.Contains(t, "unexpected end-of-file"):
		return StoreDaemonGone
	}
	return StoreOther
}

// DaemonMissing tells whether text says the nix-daemon is not running.
func DaemonMissing(text string) bool {
	return strings.Contains(text, "cannot connect to socket") || strings.Contains(text, "daemon-socket")
}
