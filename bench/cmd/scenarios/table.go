package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
)

// printTable prints one row per scenario run for stacks, with each
// stack's figure, and returns how many targets rollcall missed.
func printTable(w io.Writer, results []result) int {
	order, byKey := collect(results, false)
	if len(order) == 0 {
		return 0
	}
	fmt.Fprintf(w, "\n| scenario | target | rollcall | baseline (etcd naming) | rollcall meets target |\n|---|---|---|---|---|\n")
	missed := 0
	for _, sc := range order {
		rc, met, ran := cell(sc, byKey, "rollcall")
		bl, _, _ := cell(sc, byKey, "baseline")
		verdict := "yes"
		if ran && !met {
			verdict, missed = "**no**", missed+1
		}
		if !ran {
			verdict = "-"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", sc.name, sc.target.text, rc, bl, verdict)
	}
	return missed
}

// printBalanceTable prints the balancing scenarios, a column per policy,
// and returns how many targets the recommended policy missed.
func printBalanceTable(w io.Writer, results []result) int {
	order, byKey := collect(results, true)
	if len(order) == 0 {
		return 0
	}
	fmt.Fprintf(w, "\n| scenario | target (recommended policy) |")
	for _, p := range policies {
		fmt.Fprintf(w, " %s |", p)
	}
	fmt.Fprintf(w, " %s meets target |\n|---|---|%s---|\n", recommended, strings.Repeat("---|", len(policies)))
	missed := 0
	for _, sc := range order {
		fmt.Fprintf(w, "| %s | %s |", sc.name, sc.target.text)
		verdict := "-"
		for _, p := range policies {
			text, met, ran := cell(sc, byKey, "rollcall/"+p)
			fmt.Fprintf(w, " %s |", text)
			if ran && p == recommended {
				verdict = "yes"
				if !met {
					verdict, missed = "**no**", missed+1
				}
			}
		}
		fmt.Fprintf(w, " %s |\n", verdict)
	}
	return missed
}

// cell is sc's figure for stack, whether it meets the target, and whether
// the stack ran it at all.
func cell(sc scenario, byKey map[string]result, stack string) (text string, met, ran bool) {
	r, ok := byKey[sc.name+"/"+stack]
	if !ok {
		return "not run", false, false
	}
	text, met = sc.target.check(r)
	if r.Error != "" {
		text += " (error: " + strings.SplitN(r.Error, "\n", 2)[0] + ")"
	}
	return text, met, true
}

// collect returns the scenarios of results whose policies field is
// balancing, in the order they ran, and the results by scenario/stack.
func collect(results []result, balancing bool) (order []scenario, byKey map[string]result) {
	byKey = map[string]result{}
	for _, r := range results {
		sc, ok := find(r.Scenario)
		if !ok || sc.policies != balancing || sc.group != "" {
			continue
		}
		if !slices.ContainsFunc(order, func(s scenario) bool { return s.name == sc.name }) {
			order = append(order, sc)
		}
		byKey[r.Scenario+"/"+r.Stack] = r
	}
	return order, byKey
}

// printGroupTable prints the scenarios of group that results hold, a
// column per stack, and returns how many targets a stack missed.
func printGroupTable(w io.Writer, results []result, group string, stacks []string) int {
	var order []scenario
	byKey := map[string]result{}
	for _, r := range results {
		sc, ok := find(r.Scenario)
		if !ok || sc.group != group {
			continue
		}
		if !slices.ContainsFunc(order, func(s scenario) bool { return s.name == sc.name }) {
			order = append(order, sc)
		}
		byKey[r.Scenario+"/"+r.Stack] = r
	}
	if len(order) == 0 {
		return 0
	}
	fmt.Fprintf(w, "\n| scenario | target | %s | meets target |\n|---|---|%s---|\n", strings.Join(stacks, " | "), strings.Repeat("---|", len(stacks)))
	missed := 0
	for _, sc := range order {
		fmt.Fprintf(w, "| %s | %s |", sc.name, sc.target.text)
		verdict := "-"
		for _, st := range stacks {
			text, met, ran := cell(sc, byKey, st)
			fmt.Fprintf(w, " %s |", text)
			switch {
			case ran && !met:
				verdict, missed = "**no**", missed+1
			case ran && verdict == "-":
				verdict = "yes"
			}
		}
		fmt.Fprintf(w, " %s |\n", verdict)
	}
	return missed
}
