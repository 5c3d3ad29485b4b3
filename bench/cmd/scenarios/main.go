// Command scenarios measures discovery under failure and scale: for each
// scenario it starts a real etcd, greeter processes and a closed-loop load
// (32 workers, 1 s deadline), applies one event, and records every call.
// Each scenario runs for rollcall and for a baseline built only from
// etcd's client/v3/naming packages, in the same run. It prints one JSON
// line per run, then a table, and with -write writes docs/benchmarks.md;
// it exits 1 when rollcall misses a target.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime/pprof"
	"strings"

	_ "google.golang.org/grpc/balancer/leastrequest" // compared in the balancing scenarios
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "scenarios:", err)
		os.Exit(1)
	}
}

func run() error {
	only := flag.String("run", "", "comma-separated scenarios, or groups of them (xds, models) (default: all)")
	short := flag.Bool("smoke", false, "a few seconds per scenario, for CI")
	stacks := flag.String("stacks", "rollcall,baseline", "stacks to run: rollcall, rollcall/<policy>, baseline")
	bin := flag.String("bin", "bin", "directory with etcd, greeter and baseline-greeter")
	write := flag.String("write", "", "write the results, with what each scenario does, to this markdown file")
	gobench := flag.Bool("gobench", false, "first run the Go benchmarks of the hot paths (from the repository root), for -write")
	cpuProfile := flag.String("cpuprofile", "", "write this process's CPU profile to this file (the throughput scenario labels its calls way=discovery or way=direct)")
	var worker herdWorker
	isWorker := worker.flags(flag.CommandLine)
	flag.Parse()
	if *isWorker {
		return worker.run()
	}

	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}

	t := full
	if *short {
		t = smoke
	}
	chosen, err := parseStacks(*stacks, *bin)
	if err != nil {
		return err
	}
	selected, err := selectScenarios(*only)
	if err != nil {
		return err
	}
	var goBenchmarks string
	var goBenchErr error
	if *gobench {
		goBenchmarks, goBenchErr = runGoBenchmarks(os.Stdout)
	}

	ctx := context.Background()
	var results []result
	out := json.NewEncoder(os.Stdout)
	for _, sc := range selected {
		runScenario(ctx, sc, chosen, *bin, t, *short, func(r result) {
			out.Encode(r)
			results = append(results, r)
		})
	}
	missed := printTable(os.Stdout, results) + printBalanceTable(os.Stdout, results) +
		printGroupTable(os.Stdout, results, groupXDS, []string{"xds"}) + printGroupTable(os.Stdout, results, groupModels, modelStacks)
	if *write != "" {
		// The doc is written even when rollcall misses a target.
		if err := writeDocFile(*write, results, goBenchmarks); err != nil {
			return err
		}
	}
	if missed > 0 {
		return fmt.Errorf("rollcall missed %d target(s)", missed)
	}
	return goBenchErr
}

// parseStacks returns the stacks named in list.
func parseStacks(list, bin string) ([]stack, error) {
	var chosen []stack
	for _, name := range strings.Split(list, ",") {
		switch {
		case strings.HasPrefix(name, "rollcall/"):
			chosen = append(chosen, rollcallStack(bin+"/greeter", strings.TrimPrefix(name, "rollcall/")))
		case name == "rollcall":
			chosen = append(chosen, rollcallStack(bin+"/greeter", ""))
		case name == "baseline":
			chosen = append(chosen, baselineStack(bin+"/baseline-greeter"))
		default:
			return nil, fmt.Errorf("unknown stack %q: want rollcall, rollcall/<policy> or baseline", name)
		}
	}
	return chosen, nil
}

// selectScenarios returns the scenarios named in list, comma-separated,
// in its order; all of them when list is empty.
func selectScenarios(list string) ([]scenario, error) {
	if list == "" {
		return scenarios, nil
	}
	var selected []scenario
	for _, name := range strings.Split(list, ",") {
		if name == groupXDS || name == groupModels {
			for _, sc := range scenarios {
				if sc.group == name {
					selected = append(selected, sc)
				}
			}
			continue
		}
		sc, ok := find(name)
		if !ok {
			var names []string
			for _, s := range scenarios {
				names = append(names, s.name)
			}
			return nil, fmt.Errorf("unknown scenario %q: want one of %s", name, strings.Join(names, ", "))
		}
		selected = append(selected, sc)
	}
	return selected, nil
}

// runScenario runs sc once per stack (once per policy for a balancing
// scenario, once for rollcall for one that runs alone) and passes each
// run's result to done as it ends; a run that fails carries its error.
func runScenario(ctx context.Context, sc scenario, chosen []stack, bin string, t timing, short bool, done func(result)) {
	if sc.runAlone != nil {
		r := result{Scenario: sc.name, Stack: "rollcall"}
		if err := sc.runAlone(ctx, bin, short, &r); err != nil {
			r.Error = err.Error()
		}
		done(r)
		return
	}
	if sc.stacks != nil {
		chosen = sc.stacks(bin)
	}
	if sc.policies {
		// Balancing scenarios compare rollcall's policies, not stacks.
		chosen = nil
		for _, p := range policies {
			chosen = append(chosen, rollcallStack(bin+"/greeter", p))
		}
	}
	for _, st := range chosen {
		r := result{Scenario: sc.name, Stack: st.name}
		e, err := setup(ctx, st, bin+"/etcd", sc.members(), sc.greeterFlags(), sc.countsAttempts, sc.clientZone)
		if err == nil {
			sent0 := e.obs.sent.Load()
			err = sc.run(ctx, e, t, &r)
			if r.Calls > 0 && sc.countsAttempts {
				r.metric("attempts_per_call", float64(e.obs.sent.Load()-sent0)/float64(r.Calls))
			}
			e.close()
		}
		if err != nil {
			r.Error = err.Error()
		}
		done(r)
	}
}
