package main

import (
	"fmt"
	"io"
	"strings"
)

// target is what rollcall must reach in a scenario, as the issue states it.
type target struct {
	text   string
	metric func(r result) (string, bool) // the figure shown, and whether it meets the target
}

func failedCalls(r result) (string, bool) {
	return fmt.Sprintf("%d failed / %d", r.Failed, r.Calls), r.Failed == 0 && r.Error == ""
}

// attempts shows the attempts sent per call, and whether they are within
// limit.
func attempts(r result, limit float64) (string, bool) {
	a := r.Metrics["attempts_per_call"]
	return fmt.Sprintf("%.3f attempts/call", a), a <= limit
}

// serverCalls is the failed calls and the server calls per client call.
func serverCalls(r result) (string, bool) {
	f, ok := failedCalls(r)
	s := r.Metrics["server_calls_per_call"]
	return fmt.Sprintf("%s; %.3f server calls/call", f, s), ok && s <= 1.1
}

var targets = map[string]target{
	"kill": {"0 failed calls; <= 1.05 attempts/call", func(r result) (string, bool) {
		f, ok := failedCalls(r)
		a, aok := attempts(r, 1.05)
		return f + "; " + a, ok && aok
	}},
	"term": {"0 failed calls; <= 1.05 attempts/call", func(r result) (string, bool) {
		f, ok := failedCalls(r)
		a, aok := attempts(r, 1.05)
		return f + "; " + a, ok && aok
	}},
	"rolling": {"0 failed; 3 new served; <= 1.05 attempts/call", func(r result) (string, bool) {
		f, ok := failedCalls(r)
		n := r.Metrics["new_instances_served"]
		a, aok := attempts(r, 1.05)
		return fmt.Sprintf("%s; %.0f new served; %s", f, n, a), ok && n == 3 && aok
	}},
	"deadline-600ms": {"0 failed; <= 1.1 server calls/call", serverCalls},
	"deadline-900ms": {"0 failed; <= 1.1 server calls/call", serverCalls},
	"outage": {"<= 1.1 server calls/call during; 0 failed after", func(r result) (string, bool) {
		s := r.Metrics["server_calls_per_call_during"]
		return fmt.Sprintf("%.3f server calls/call during (%.0f calls); %d failed / %d after", s, r.Metrics["calls_during"], r.Failed, r.Calls),
			r.Error == "" && s <= 1.1 && r.Failed == 0
	}},
	"scale-up": {"first call <= 100 ms (p99)", func(r result) (string, bool) {
		p := r.Metrics["first_call_p99_ms"]
		return fmt.Sprintf("p50 %.1f ms, p99 %.1f ms", r.Metrics["first_call_p50_ms"], p), r.Error == "" && p <= 100
	}},
	"etcd-down":  {"0 failed; re-registered <= 2 s, and still a TTL later", reregistered},
	"etcd-wiped": {"0 failed; re-registered <= 2 s, and still a TTL later", reregistered},
	"herd": {"every key written again <= 2 s after etcd returns", func(r result) (string, bool) {
		ms := r.Metrics["reregister_ms"]
		return fmt.Sprintf("%.0f registrations, %.0f resolvers: written again in %.0f ms; peak %.0f requests/s after the return (steady %.0f/s)",
				r.Metrics["registrations"], r.Metrics["resolvers"], ms, r.Metrics["peak_requests_per_second"], r.Metrics["steady_requests_per_second"]),
			r.Error == "" && ms >= 0 && ms <= 2000
	}},
	"etcd-leader": {"0 failed; 0 registrations lost", func(r result) (string, bool) {
		f, ok := failedCalls(r)
		lost := r.Metrics["registrations_lost"]
		return fmt.Sprintf("%s; %.0f lost", f, lost), ok && lost == 0
	}},
	"churn": {"list = etcd's within 1 s", func(r result) (string, bool) {
		c := r.Metrics["converge_max_ms"]
		return fmt.Sprintf("%.0f ms; cpu %.0f ms; heap %.1f MB", c, r.Metrics["client_cpu_ms"], r.Metrics["heap_inuse_mb"]), r.Error == "" && c <= 1000
	}},
	"throughput": {"ratio >= 0.99", func(r result) (string, bool) {
		ratio := r.Metrics["ratio"]
		return fmt.Sprintf("%.0f/s vs %.0f/s direct: median pair %.3f (middle half %.2f-%.2f); client CPU %.1f vs %.1f µs/call",
			r.CallsPerSec, r.Metrics["direct_calls_per_second"], ratio, r.Metrics["ratio_q1"], r.Metrics["ratio_q3"],
			r.Metrics["client_cpu_us_per_call"], r.Metrics["direct_client_cpu_us_per_call"]), r.Error == "" && ratio >= 0.99
	}},
}

func reregistered(r result) (string, bool) {
	f, ok := failedCalls(r)
	ms, kept := r.Metrics["reregister_ms"], r.Metrics["registered_after_ttl"]
	if ms < 0 {
		return fmt.Sprintf("%s; never re-registered; %.0f of 3 registered a TTL later", f, kept), false
	}
	return fmt.Sprintf("%s; re-registered in %.0f ms; %.0f of 3 registered a TTL later", f, ms, kept), ok && ms <= 2000 && kept == 3
}

// balanceTargets are the balancing scenarios' targets for the recommended
// policy, P2CEWMA.
var balanceTargets = map[string]target{
	"slow": {"p99 <= 1.5x all-fast; throughput >= 0.95 of all-fast", func(r result) (string, bool) {
		p, tp := r.Metrics["p99_ratio"], r.Metrics["throughput_ratio"]
		return fmt.Sprintf("p99 %.2fx, throughput %.2f, slow share %.1f%%, %d failed", p, tp, 100*r.Metrics["slow_share"], r.Failed),
			r.Error == "" && p <= 1.5 && tp >= 0.95
	}},
	"hang": {"0 failed; throughput >= 0.9; no pick 1 s after the stop; back within 5 s", func(r result) (string, bool) {
		tp, picks, back := r.Metrics["throughput_during_stop_ratio"], r.Metrics["picks_after_1s"], r.Metrics["back_after_ms"]
		return fmt.Sprintf("%d failed; throughput %.2f; %.0f picks; back in %.0f ms", r.Failed, tp, picks, back),
			r.Error == "" && r.Failed == 0 && tp >= 0.9 && picks == 0 && back >= 0 && back <= 5000
	}},
	"errors": {"slow share <= 2 %; no NOT_FOUND retried", func(r result) (string, bool) {
		share, retried := r.Metrics["slow_share"], r.Metrics["not_found_retried"]
		return fmt.Sprintf("slow share %.1f%%; %.0f NOT_FOUND retried; %.0f hedges; %s", 100*share, retried, r.Metrics["hedges"], fmt.Sprint(r.Codes)),
			r.Error == "" && share <= 0.02 && retried == 0
	}},
	"weights": {"shares 20/20/60 % within 2 points", func(r result) (string, bool) {
		w := r.Metrics["worst_share_error_points"]
		return fmt.Sprintf("%.0f/%.0f/%.0f %%", 100*r.Metrics["share_g1"], 100*r.Metrics["share_g2"], 100*r.Metrics["share_g3"]),
			r.Error == "" && w <= 2
	}},
}

// printBalanceTable prints the balancing scenarios, a column per policy,
// and returns how many targets the recommended policy missed.
func printBalanceTable(w io.Writer, results []result) int {
	var rows []string
	byKey := map[string]result{}
	for _, r := range results {
		if _, ok := balanceTargets[r.Scenario]; !ok {
			continue
		}
		if !contains(rows, r.Scenario) {
			rows = append(rows, r.Scenario)
		}
		byKey[r.Scenario+"/"+r.Stack] = r
	}
	if len(rows) == 0 {
		return 0
	}
	fmt.Fprintf(w, "\n| scenario | target (recommended policy) |")
	for _, p := range policies {
		fmt.Fprintf(w, " %s |", p)
	}
	fmt.Fprintf(w, " %s meets target |\n|---|---|%s---|\n", recommended, strings.Repeat("---|", len(policies)))
	missed := 0
	for _, name := range rows {
		tg := balanceTargets[name]
		fmt.Fprintf(w, "| %s | %s |", name, tg.text)
		verdict := "-"
		for _, p := range policies {
			r, ok := byKey[name+"/rollcall/"+p]
			if !ok {
				fmt.Fprintf(w, " not run |")
				continue
			}
			text, met := tg.metric(r)
			if r.Error != "" {
				text += " (error: " + strings.SplitN(r.Error, "\n", 2)[0] + ")"
			}
			fmt.Fprintf(w, " %s |", text)
			if p == recommended {
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

// printTable prints one row per scenario with each stack's figure, and
// returns how many targets rollcall missed.
func printTable(w io.Writer, results []result) int {
	byKey := map[string]result{}
	var order []string
	for _, r := range results {
		if _, ok := targets[r.Scenario]; !ok {
			continue
		}
		if _, seen := byKey[r.Scenario+"/rollcall"]; !seen && !contains(order, r.Scenario) {
			order = append(order, r.Scenario)
		}
		byKey[r.Scenario+"/"+r.Stack] = r
	}
	missed := 0
	if len(order) == 0 {
		return 0
	}
	fmt.Fprintf(w, "\n| scenario | target | rollcall | baseline (etcd naming) | rollcall meets target |\n|---|---|---|---|---|\n")
	for _, name := range order {
		tg := targets[name]
		cell := func(stack string) (string, bool, bool) {
			r, ok := byKey[name+"/"+stack]
			if !ok {
				return "not run", false, false
			}
			text, met := tg.metric(r)
			if r.Error != "" {
				text += " (error: " + strings.SplitN(r.Error, "\n", 2)[0] + ")"
			}
			return text, met, true
		}
		rc, met, ran := cell("rollcall")
		bl, _, _ := cell("baseline")
		verdict := "yes"
		if ran && !met {
			verdict, missed = "**no**", missed+1
		}
		if !ran {
			verdict = "-"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", name, tg.text, rc, bl, verdict)
	}
	return missed
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
