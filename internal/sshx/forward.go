package sshx

import (
	"fmt"
	"net"
)

// ListenUnix asks the server to listen on a unix socket at path (OpenSSH's
// streamlocal forwarding, allowed by sshd's default AllowStreamLocalForwarding
// yes): every connection a program on the server opens to it arrives here,
// over this connection. The socket is the SSH user's (sshd creates it with
// StreamLocalBindMask, 0177 by default); path must not exist yet.
func (c *Client) ListenUnix(path string) (net.Listener, error) {
	ln, err := c.client.ListenUnix(path)
	if err != nil {
		if d := c.Dead(); d != nil {
			return nil, d
		}
		return nil, fmt.Errorf("%s refuses to forward a socket to this machine (sshd's AllowStreamLocalForwarding or DisableForwarding): %w", c.cfg.Host, err)
	}
	return ln, nil
}
