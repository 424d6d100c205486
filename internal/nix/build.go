package nix

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"sort"
	"strings"
)

// Toplevel is the installable of a configuration's system.
func Toplevel(name string) string {
	return fmt.Sprintf("nixosConfigurations.%q.config.system.build.toplevel", name)
}

// Build builds the given flake attributes in one `nix build` (one evaluator
// for all of them) and returns their output paths in order. Progress and
// errors go to parser.
func (n Nix) Build(ctx context.Context, f Flake, attrs []string, parser *LogParser) ([]string, error) {
	args := []string{"build", "--no-link", "--json", "--keep-going", "--log-format", "internal-json"}
	for _, a := range attrs {
		args = append(args, f.Ref()+"#"+a)
	}
	args = append(args, f.Args()...)
	out, err := n.stream(ctx, args, parser, nil)
	if err != nil {
		return nil, err
	}
	var res []struct {
		Outputs map[string]string `json:"outputs"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		return nil, fmt.Errorf("reading nix build output: %w", err)
	}
	if len(res) != len(attrs) {
		return nil, fmt.Errorf("nix build returned %d results for %d systems", len(res), len(attrs))
	}
	paths := make([]string, len(res))
	for i, r := range res {
		paths[i] = r.Outputs["out"]
	}
	return paths, nil
}

// stream runs the nix command with the experimental features it needs
// (users need not edit nix.conf) and stderr going to the parser (when given).
func (n Nix) stream(ctx context.Context, args []string, parser *LogParser, env []string) (string, error) {
	args = append([]string{"--extra-experimental-features", "nix-command flakes"}, args...)
	var stderr io.Writer
	if parser != nil {
		stderr = parser
	}
	return n.run(ctx, n.bin(), args, stderr, env)
}

// PathInfo is one store path's metadata.
type PathInfo struct {
	Path        string   `json:"path"`
	NarSize     int64    `json:"narSize"`
	ClosureSize int64    `json:"closureSize"`
	References  []string `json:"references"`
}

// parsePathInfo reads `nix path-info --json`: an array in Nix < 2.19, an
// object keyed by path in newer versions.
func parsePathInfo(out string) ([]PathInfo, error) {
	out = strings.TrimSpace(out)
	var list []PathInfo
	if strings.HasPrefix(out, "[") {
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			return nil, err
		}
		return list, nil
	}
	var m map[string]*PathInfo
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		return nil, err
	}
	for p, info := range m {
		if info == nil {
			return nil, fmt.Errorf("%s is not valid", p)
		}
		info.Path = p
		list = append(list, *info)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Path < list[j].Path })
	return list, nil
}

// Closures returns the closure (path -> NAR size) of each of paths, from
// one `nix path-info` for all of them.
func (n Nix) Closures(ctx context.Context, paths []string) (map[string]map[string]int64, error) {
	return n.closures(ctx, "", paths)
}

func (n Nix) closures(ctx context.Context, store string, paths []string) (map[string]map[string]int64, error) {
	args := []string{"path-info", "--json", "-r"}
	if store != "" {
		args = append(args, "--store", store)
	}
	out, err := n.stream(ctx, append(args, paths...), nil, nil)
	if err != nil {
		return nil, err
	}
	infos, err := parsePathInfo(out)
	if err != nil {
		return nil, err
	}
	byPath := map[string]PathInfo{}
	for _, i := range infos {
		byPath[i.Path] = i
	}
	result := map[string]map[string]int64{}
	for _, root := range paths {
		closure := map[string]int64{}
		stack := []string{root}
		for len(stack) > 0 {
			p := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if _, seen := closure[p]; seen {
				continue
			}
			info, ok := byPath[p]
			if !ok {
				return nil, fmt.Errorf("nix path-info did not describe %s", p)
			}
			closure[p] = info.NarSize
			stack = append(stack, info.References...)
		}
		result[root] = closure
	}
	return result, nil
}

// CopyOptions for Copy.
type CopyOptions struct {
	To          string // store URI, e.g. unix:///path/to/bridge.sock
	Substitute  bool   // let the destination fetch from its own substituters
	NoCheckSigs bool   // the destination accepts unsigned paths (a trusted client)
	// Derivation copies a .drv and its closure (other derivations and
	// sources) instead of building its outputs: Nix 2.8 takes a bare .drv
	// as "its outputs" and would build them here.
	Derivation bool
}

// CopyArgs are the arguments of `nix copy` before the path.
func CopyArgs(o CopyOptions) []string {
	args := []string{"copy", "--log-format", "internal-json", "--to", o.To}
	if o.Derivation {
		args = append(args, "--derivation")
	}
	if o.NoCheckSigs {
		args = append(args, "--no-check-sigs")
	}
	if o.Substitute {
		args = append(args, "--substitute-on-destination")
	}
	return args
}

// Copy copies path's closure to another store.
func (n Nix) Copy(ctx context.Context, path string, o CopyOptions, parser *LogParser) error {
	args := append(CopyArgs(o), path)
	_, err := n.stream(ctx, args, parser, nil)
	return err
}
