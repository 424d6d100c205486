package nix

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/monibahmed/nixos-config/internal/run"
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
	out, err := n.stream(ctx, f.Offline(), args, parser, nil)
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

// stream runs nix (with the toolkit's settings, GlobalArgs) with stderr
// going to the parser (when given).
func (n Nix) stream(ctx context.Context, offline bool, args []string, parser *LogParser, env []string) (string, error) {
	c := run.Cmd{Name: n.bin(), Args: append(GlobalArgs(offline), args...), Env: append(append([]string(nil), n.Env...), env...)}
	if parser != nil {
		c.Stderr = parser
	}
	return n.run(ctx, c)
}

// PathInfo is one store path's metadata.
type PathInfo struct {
	Path        string   `json:"path"`
	NarSize     int64    `json:"narSize"`
	ClosureSize int64    `json:"closureSize"`
	References  []string `json:"references"`
}

// parsePathInfo reads `nix path-info --json` in each format Nix has had:
// an array (< 2.19), an object keyed by full store path (2.19 up to
// --json-format 1), and --json-format 2 (2.34 and later):
// {"info":{<base name>:{..., "references":[<base names>]}},"storeDir":...,"version":2}.
// Paths and references come back as full store paths in every case.
func parsePathInfo(out string) ([]PathInfo, error) {
	out = strings.TrimSpace(out)
	var list []PathInfo
	if strings.HasPrefix(out, "[") {
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			return nil, err
		}
		return list, nil
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal([]byte(out), &top); err != nil {
		return nil, err
	}
	if v2, ok := top["info"]; ok && top["version"] != nil {
		var doc struct {
			Info     map[string]*PathInfo `json:"info"`
			StoreDir string               `json:"storeDir"`
			Version  int                  `json:"version"`
		}
		if err := json.Unmarshal([]byte(out), &doc); err != nil {
			return nil, err
		}
		if doc.Version != 2 || doc.StoreDir == "" || v2 == nil {
			return nil, fmt.Errorf("nix path-info: unknown JSON format version %d", doc.Version)
		}
		full := func(p string) string {
			if strings.HasPrefix(p, "/") {
				return p
			}
			return strings.TrimSuffix(doc.StoreDir, "/") + "/" + p
		}
		for base, info := range doc.Info {
			if info == nil {
				return nil, fmt.Errorf("%s is not valid", full(base))
			}
			info.Path = full(base)
			for i, r := range info.References {
				info.References[i] = full(r)
			}
			list = append(list, *info)
		}
	} else {
		for p, raw := range top {
			var info *PathInfo
			if err := json.Unmarshal(raw, &info); err != nil {
				return nil, err
			}
			if info == nil {
				return nil, fmt.Errorf("%s is not valid", p)
			}
			info.Path = p
			list = append(list, *info)
		}
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Path < list[j].Path })
	return list, nil
}

// pathInfo runs `nix path-info --json` with args. It asks for
// --json-format 2 (Nix 2.34 deprecates --json without it); a Nix that does
// not know the flag (2.8 to 2.33 here: "unrecognised flag '--json-format'")
// is asked again without it. Behaviour, not version numbers, decides; the
// answer is remembered (n.Memo), so later calls start nix once.
func (n Nix) pathInfo(ctx context.Context, args ...string) ([]PathInfo, error) {
	if n.Memo.load() >= 0 {
		out, err := n.stream(ctx, false, append([]string{"path-info", "--json", "--json-format", "2"}, args...), nil, nil)
		if err == nil {
			n.Memo.store(1)
			return parsePathInfo(out)
		}
		var ee *run.ExitError
		if !errors.As(err, &ee) || ee.Canceled || !strings.Contains(ee.Stderr, "--json-format") {
			return nil, err
		}
		n.Memo.store(-1)
	}
	out, err := n.stream(ctx, false, append([]string{"path-info", "--json"}, args...), nil, nil)
	if err != nil {
		return nil, err
	}
	return parsePathInfo(out)
}

// Closures returns the closure (path -> NAR size) of each of paths, from
// one `nix path-info` for all of them.
func (n Nix) Closures(ctx context.Context, paths []string) (map[string]map[string]int64, error) {
	return n.closures(ctx, "", paths)
}

// StoreClosures is Closures of paths in another store (e.g. a build
// host's, through a bridge: unix://...).
func (n Nix) StoreClosures(ctx context.Context, store string, paths []string) (map[string]map[string]int64, error) {
	return n.closures(ctx, store, paths)
}

func (n Nix) closures(ctx context.Context, store string, paths []string) (map[string]map[string]int64, error) {
	args := []string{"-r"}
	if store != "" {
		args = append(args, "--store", store)
	}
	infos, err := n.pathInfo(ctx, append(args, paths...)...)
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
	From        string // source store URI (default: the local store)
	To          string // store URI, e.g. unix:///path/to/bridge.sock
	Substitute  bool   // let the destination fetch from its own substituters
	NoCheckSigs bool   // the destination accepts unsigned paths (a trusted client)
	NoRecursive bool   // exactly the given paths, not their closures
	// Derivation copies a .drv and its closure (other derivations and
	// sources) instead of building its outputs: Nix 2.8 takes a bare .drv
	// as "its outputs" and would build them here.
	Derivation bool
}

// CopyArgs are the arguments of `nix copy` before the paths.
func CopyArgs(o CopyOptions) []string {
	args := []string{"copy", "--log-format", "internal-json", "--to", o.To}
	if o.From != "" {
		args = append(args, "--from", o.From)
	}
	if o.Derivation {
		args = append(args, "--derivation")
	}
	if o.NoCheckSigs {
		args = append(args, "--no-check-sigs")
	}
	if o.Substitute {
		args = append(args, "--substitute-on-destination")
	}
	if o.NoRecursive {
		args = append(args, "--no-recursive")
	}
	return args
}

// Copy copies paths (with their closures unless NoRecursive) to another store.
func (n Nix) Copy(ctx context.Context, paths []string, o CopyOptions, parser *LogParser) error {
	args := CopyArgs(o)
	args = append(args, paths...)
	_, err := n.stream(ctx, false, args, parser, nil)
	var envErr *EnvError
	if errors.As(err, &envErr) {
		// The output mixes this machine's Nix with the target's (whose
		// daemon socket errors read the same): the caller tells them apart.
		return envErr.Err
	}
	return err
}
