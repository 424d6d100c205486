package discover

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/skeema/knownhosts"
	"golang.org/x/crypto/ssh"

	"github.com/monibahmed/nixos-config/internal/ui"
)

// maxKnownHostsFile bounds how much of a known_hosts file is searched.
const maxKnownHostsFile = 16 << 20

// knownElsewhere lists the known_hosts entries (their host patterns) that
// have key, other than for addr itself: a host that presents a key unknown
// at its address but known for another one moved, or copies a key. Hashed
// entries are named by file and line; @revoked and @cert-authority lines do
// not count. At most five are listed.
func knownElsewhere(files []string, key ssh.PublicKey, addr string, port int) []string {
	want := key.Marshal()
	self := map[string]bool{addr: true, knownhosts.Normalize(net.JoinHostPort(addr, strconv.Itoa(port))): true}
	var out []string
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(io.LimitReader(fh, maxKnownHostsFile))
		sc.Buffer(make([]byte, 64<<10), 64<<10)
		n := 0
		for sc.Scan() && len(out) < 5 {
			n++
			line := bytes.TrimSpace(sc.Bytes())
			if len(line) == 0 || line[0] == '#' {
				continue
			}
			marker, hosts, pub, _, _, err := ssh.ParseKnownHosts(line)
			if err != nil || marker != "" || !bytes.Equal(pub.Marshal(), want) {
				continue
			}
			for _, h := range hosts {
				switch {
				case strings.HasPrefix(h, "|1|"):
					h = "a hashed entry (" + ui.Sanitize(f, 200) + ":" + strconv.Itoa(n) + ")"
				case self[h] || strings.HasPrefix(h, "!"):
					continue
				default:
					h = ui.Sanitize(h, maxNote)
				}
				if !contains(out, h) && len(out) < 5 {
					out = append(out, h)
				}
			}
		}
		fh.Close()
	}
	return out
}
