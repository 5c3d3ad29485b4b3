package main

import (
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
)

// goBenchmarks are the Go benchmarks of the hot paths: the resolver's
// update at 10 to 10,000 instances, each picker, and a call through
// discovery and balancing against a direct one. Each runs in its module's
// directory, relative to the repository root.
var goBenchmarks = []struct {
	dir  string
	pkgs []string
}{
	{"pkg", []string{"./discovery/resolve/", "./balance/", "./call/"}},
	{"bench", []string{"./callcost/"}},
}

// runGoBenchmarks runs goBenchmarks, copying their output to w, and
// returns that output with the command before each part, for the doc.
// Compare runs with benchstat.
func runGoBenchmarks(w io.Writer) (string, error) {
	var out strings.Builder
	var errs []error
	for _, gb := range goBenchmarks {
		args := append([]string{"test", "-run", "^$", "-bench", ".", "-benchtime", "2s", "-timeout", "20m"}, gb.pkgs...)
		fmt.Fprintf(&out, "$ cd %s && go %s\n", gb.dir, strings.Join(args, " "))
		cmd := exec.Command("go", args...)
		cmd.Dir = gb.dir
		cmd.Stdout, cmd.Stderr = io.MultiWriter(w, &out), w
		if err := cmd.Run(); err != nil {
			errs = append(errs, fmt.Errorf("go benchmarks in %s: %w", gb.dir, err))
		}
	}
	return out.String(), errors.Join(errs...)
}
