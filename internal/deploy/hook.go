package deploy

import (
	"context"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/monibahmed/nixos-config/internal/run"
	"github.com/monibahmed/nixos-config/internal/target"
)

// HookPath is the notification hook, relative to the repository: when it
// exists and is executable, it runs after each target (off by default; see
// hooks/post-deploy.example).
const HookPath = "hooks/post-deploy"

// runHook runs the notification hook for one result, if there is one. A
// failing hook is reported and fails nothing.
func (d *Deployer) runHook(ctx context.Context, r Result, src Source) {
	if d.Hook == "" {
		return
	}
	info, err := os.Stat(d.Hook)
	if err != nil || info.IsDir() || info.Mode()&0o111 == 0 {
		return
	}
	gen := ""
	if r.Generation > 0 {
		gen = strconv.Itoa(r.Generation)
	}
	msg := ""
	if r.Err != nil {
		msg = r.Err.Error()
	}
	env := []string{
		"NIXOS_CONFIG_TARGET=" + r.Target,
		"NIXOS_CONFIG_ADDRESS=" + r.Address,
		"NIXOS_CONFIG_RESULT=" + string(r.Status),
		"NIXOS_CONFIG_GENERATION=" + gen,
		"NIXOS_CONFIG_COMMIT=" + src.Commit,
		"NIXOS_CONFIG_DIRTY=" + strconv.FormatBool(src.Dirty),
		"NIXOS_CONFIG_MESSAGE=" + msg,
	}
	hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	var out strings.Builder
	err = d.Runner.Run(hctx, run.Cmd{Name: d.Hook, Dir: d.Root, Env: env, Stdout: &out, Stderr: &out})
	for _, line := range target.LastLines(out.String(), 5) {
		line = target.Clean(line, 300)
		d.Report.Note(r.Target, "hook: "+line)
	}
	if err != nil {
		d.Report.Note(r.Target, "hook "+HookPath+" failed: "+err.Error())
	}
}
