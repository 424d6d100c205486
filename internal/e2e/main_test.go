package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/monibahmed/nixos-config/internal/lab"
	"github.com/monibahmed/nixos-config/internal/run"
	"github.com/monibahmed/nixos-config/internal/testutil"
)

// deployLab is the lab the deploy tests share (nil when this machine cannot
// run one; those tests then fail in CI and skip elsewhere).
var deployLab *lab.Lab

// fleetNames are the example targets of the repository.
var fleetNames = []string{"dev-workstation", "lab-server", "media-center"}

func TestMain(m *testing.M) {
	if os.Getenv(rusageWrapperEnv) != "" {
		os.Exit(rusageWrapper())
	}
	os.Exit(func() int {
		if os.Geteuid() == 0 && len(lab.Prerequisites()) == 0 {
			dir, err := os.MkdirTemp("", "e2e-lab-")
			if err != nil {
				fmt.Println(err)
				return 1
			}
			defer os.RemoveAll(dir)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			l, err := lab.Start(ctx, lab.Config{Name: "e2d", StateDir: filepath.Join(dir, "state"), Subnet: "10.77.50.0/24",
				Targets: fleetNames, Extras: true, Bastion: true}, run.Exec{})
			if err != nil {
				fmt.Println("lab up:", err)
				return 1
			}
			defer func() {
				if err := l.Down(context.Background()); err != nil {
					fmt.Println("lab down:", err)
				}
			}()
			deployLab = l
		}
		defer stopSystemdLab()
		defer testutil.RemoveMageBinary()
		return m.Run()
	}())
}
