//go:build ignore

// Zero-install entry point: with only Go installed, run any target as
//
//	go run magefile.go <target> [args] [-flags]
//
// (`go run magefile.go -l` lists them). With mage installed, `mage <target>`
// does the same. The targets themselves live in magefiles/.
package main

import (
	"os"

	"github.com/magefile/mage/mage"
)

func main() { os.Exit(mage.Main()) }
