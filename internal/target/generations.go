package target

import (
	"context"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Generation is one system generation of a target.
type Generation struct {
	Number  int       `json:"number"`
	Path    string    `json:"path"`
	Date    time.Time `json:"date"`
	Current bool      `json:"current"`
	// From the deployment history, when this tool deployed it.
	Deploy *Entry `json:"deploy,omitempty"`
}

// At most this many generations are read (NixOS keeps far fewer).
const maxGenerations = 10000

const generationsScript = `n=0
for l in /nix/var/nix/profiles/system-*-link; do
	[ -e "$l" ] || continue
	n=$((n + 1))
	[ $n -gt ` + "10000" + ` ] && break
	echo "gen $(basename "$l") $(readlink "$l") $(stat -c %Y "$l")"
done
echo "current $(readlink /nix/var/nix/profiles/system)"
`

// Generations lists the target's system generations (no sudo needed).
// Lines that are not valid generations are ignored.
func (s *Session) Generations(ctx context.Context) ([]Generation, error) {
	out, err := s.Run(ctx, "listing generations", generationsScript, nil)
	if err != nil {
		return nil, commandError("listing generations", err, out)
	}
	return parseGenerations(out.Stdout), nil
}

func parseGenerations(out string) []Generation {
	var gens []Generation
	current := 0
	seen := map[int]bool{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 4 && f[0] == "gen":
			n, ok := ParseGeneration(f[1])
			if !ok || seen[n] || !IsStorePath(f[2]) || len(gens) >= maxGenerations {
				continue
			}
			secs, err := strconv.ParseInt(f[3], 10, 64)
			if err != nil || secs < 0 || secs > 1<<40 {
				secs = 0
			}
			seen[n] = true
			gens = append(gens, Generation{Number: n, Path: f[2], Date: time.Unix(secs, 0).UTC()})
		case len(f) == 2 && f[0] == "current":
			if n, ok := ParseGeneration(f[1]); ok {
				current = n
			}
		}
	}
	sort.Slice(gens, func(i, j int) bool { return gens[i].Number < gens[j].Number })
	for i := range gens {
		gens[i].Current = gens[i].Number == current
	}
	return gens
}
