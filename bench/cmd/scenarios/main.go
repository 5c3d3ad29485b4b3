// Command scenarios measures discovery under failure and scale: for each
// scenario it starts a real etcd, greeter processes and a closed-loop load
// (32 workers, 1 s deadline), applies one event, and records every call.
// Each scenario runs for rollcall and for a baseline built only from
// etcd's client/v3/naming packages, in the same run. It prints one JSON
// line per run, then a table; it exits 1 when rollcall misses a target.
package main

import (
	"context"

	"encoding/json"
	"flag"
	"fmt"
	_ "google.golang.org/grpc/balancer/leastrequest" // compared in the balancing scenarios
	"os"
	"strings"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "scenarios:", err)
		os.Exit(1)
	}
}

// countsAttempts are the scenarios whose client counts every attempt:
// the others do without the cost of it.
var countsAttempts = map[string]bool{"kill": true, "term": true, "rolling": true, "hang": true}

func run() error {
	only := flag.String("run", "", "comma-separated scenarios (default: all)")
	short := flag.Bool("smoke", false, "a few seconds per scenario, for CI")
	stacks := flag.String("stacks", "rollcall,baseline", "stacks to run: rollcall, rollcall/<policy>, baseline")
	bin := flag.String("bin", "bin", "directory with etcd, greeter and baseline-greeter")
	var worker herdWorker
	isWorker := worker.flags(flag.CommandLine)
	flag.Parse()
	if *isWorker {
		return worker.run()
	}

	t := full
	if *short {
		t = smoke
	}
	var chosen []stack
	for _, name := range strings.Split(*stacks, ",") {
		switch {
		case strings.HasPrefix(name, "rollcall/"):
			chosen = append(chosen, rollcallStack(*bin+"/greeter", strings.TrimPrefix(name, "rollcall/")))
		case name == "rollcall":
			chosen = append(chosen, rollcallStack(*bin+"/greeter", ""))
		case name == "baseline":
			chosen = append(chosen, baselineStack(*bin+"/baseline-greeter"))
		default:
			return fmt.Errorf("unknown stack %q: want rollcall or baseline", name)
		}
	}
	selected, alone := scenarios, aloneScenarios
	if *only != "" {
		selected, alone = nil, nil
		for _, name := range strings.Split(*only, ",") {
			found := false
			for _, s := range scenarios {
				if s.name == name {
					selected, found = append(selected, s), true
				}
			}
			for _, s := range aloneScenarios {
				if s.name == name {
					alone, found = append(alone, s), true
				}
			}
			if !found {
				return fmt.Errorf("unknown scenario %q", name)
			}
		}
	}

	ctx := context.Background()
	var results []result
	out := json.NewEncoder(os.Stdout)
	for _, sc := range selected {
		stacks := chosen
		if sc.policies {
			// Balancing scenarios compare rollcall's policies, not stacks.
			stacks = nil
			for _, p := range policies {
				stacks = append(stacks, rollcallStack(*bin+"/greeter", p))
			}
		}
		for _, st := range stacks {
			r := result{Scenario: sc.name, Stack: st.name}
			instances := make([][]string, sc.instances)
			if sc.flags != nil {
				instances = sc.flags
			}
			e, err := setup(ctx, st, *bin+"/etcd", sc.etcdSize, instances, countsAttempts[sc.name])
			if err == nil {
				sent0 := e.obs.sent.Load()
				err = sc.run(ctx, e, t, &r)
				if r.Calls > 0 && countsAttempts[sc.name] {
					r.metric("attempts_per_call", float64(e.obs.sent.Load()-sent0)/float64(r.Calls))
				}
				e.close()
			}
			if err != nil {
				r.Error = err.Error()
			}
			out.Encode(r)
			results = append(results, r)
		}
	}
	for _, sc := range alone {
		r := result{Scenario: sc.name, Stack: "rollcall"}
		if err := sc.run(ctx, *bin, *short, &r); err != nil {
			r.Error = err.Error()
		}
		out.Encode(r)
		results = append(results, r)
	}
	missed := printTable(os.Stdout, results) + printBalanceTable(os.Stdout, results)
	if missed > 0 {
		return fmt.Errorf("rollcall missed %d target(s)", missed)
	}
	return nil
}
