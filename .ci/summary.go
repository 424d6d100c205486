//go:build ignore

// Summary reads `go test -json` output on standard input and prints the
// output of failed tests, the packages that did not build, and one line:
// "<label>: N passed, N failed, N skipped". It exits 1 when a test or a
// package failed, a test was skipped, or no test ran.
//
//	go run .ci/summary.go <label> < test.json
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
)

type event struct {
	Action  string
	Package string
	Test    string
	Output  string
	Elapsed float64
}

func main() {
	label := "tests"
	if len(os.Args) > 1 {
		label = os.Args[1]
	}
	output := map[string][]string{} // package/test -> lines
	var passed, failed, skipped []string
	var badPkgs []string
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			// Not JSON: a build error printed by go test itself.
			fmt.Println(sc.Text())
			continue
		}
		key := e.Package + " " + e.Test
		switch e.Action {
		case "output":
			if len(output[key]) < 400 {
				output[key] = append(output[key], e.Output)
			}
		case "pass":
			if e.Test != "" {
				passed = append(passed, key)
			}
		case "fail":
			if e.Test != "" {
				failed = append(failed, key)
			} else {
				badPkgs = append(badPkgs, e.Package)
			}
		case "skip":
			if e.Test != "" {
				skipped = append(skipped, key)
			}
		}
	}
	sort.Strings(failed)
	sort.Strings(skipped)
	for _, k := range failed {
		fmt.Printf("--- FAIL %s\n%s", k, strings.Join(output[k], ""))
	}
	for _, k := range skipped {
		fmt.Printf("--- SKIP %s\n%s", k, strings.Join(output[k], ""))
	}
	testFailed := map[string]bool{}
	for _, k := range failed {
		testFailed[strings.Fields(k)[0]] = true
	}
	for _, p := range badPkgs {
		if !testFailed[p] && len(output[p+" "]) > 0 {
			fmt.Printf("--- FAIL package %s\n%s", p, strings.Join(output[p+" "], ""))
		}
	}
	fmt.Printf("%s: %d passed, %d failed, %d skipped\n", label, len(passed), len(failed), len(skipped))
	// CI=true turns a missing prerequisite into a failure; a skip is a
	// failure of the suite too: every test must run on every Nix.
	if len(failed) > 0 || len(badPkgs) > 0 || len(skipped) > 0 || len(passed) == 0 {
		os.Exit(1)
	}
}
