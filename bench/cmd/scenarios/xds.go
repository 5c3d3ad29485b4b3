package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"

	"github.com/rollcall/rollcall/pkg/call/callxds"
	"github.com/rollcall/rollcall/pkg/localstack"
)

// xdsStack is the lookaside model: the same greeters, a control plane
// (services/xds, bin/xds) reading etcd, and a Go client that knows only the
// control plane: grpc-go's xDS resolver and balancers, with the route's
// retry policy.
func xdsStack(bin string) stack {
	st := rollcallStack(bin+"/greeter", "")
	st.name = "xds"
	st.dial = nil
	st.dialEnv = func(e *env) (*grpc.ClientConn, error) {
		if err := e.startControlPlane(); err != nil {
			return nil, err
		}
		bootstrap, err := callxds.Bootstrap("bench", e.cpAddr)
		if err != nil {
			return nil, err
		}
		return callxds.Dial("greeter", callxds.WithBootstrap(bootstrap))
	}
	st.xdsBin = bin + "/xds"
	return st
}

// startControlPlane starts the control plane (again, on the same address
// after a stop) and waits for its key.
func (e *env) startControlPlane() error {
	if e.cpAddr == "" {
		e.cpAddr = freeAddr()
	}
	p, err := e.procs.Start(localstack.Command{Name: "xds", Path: e.st.xdsBin, Args: []string{
		"-listen", e.cpAddr, "-id", "cp", "-services", "greeter", "-drain-delay", "0",
		"-etcd-endpoints", strings.Join(e.etcd.Endpoints(), ","), "-log-format", "json", "-log-level", "warn",
		"-snapshot-dir", filepath.Join(e.dir, "cp-snapshots")}})
	if err != nil {
		return err
	}
	e.cp = p
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := localstack.AwaitKeys(ctx, e.cli, "rollcall/xds/cp"); err != nil {
		return fmt.Errorf("control plane: %w", err)
	}
	return nil
}

// runControlPlaneRestart stops the control plane (SIGTERM) under load and
// starts it again: clients keep the resources they hold meanwhile.
func runControlPlaneRestart(ctx context.Context, e *env, t timing, r *result) error {
	return underLoad(e, t, r, func() error {
		e.cp.Stop(syscall.SIGTERM, 20*time.Second)
		stopped := time.Now()
		if err := e.startControlPlane(); err != nil {
			return err
		}
		r.metric("control_plane_down_ms", ms(time.Since(stopped)))
		return nil
	})
}

// xdsScenarios are the lookaside model's targets, run with the xds stack
// only.
var xdsScenarios = []scenario{
	{
		name: "xds-scale-up", stacks: onlyXDS, group: groupXDS, run: runScaleUp,
		event:  "as scale-up, through the control plane: a fourth instance starts, 20 times",
		figure: "time from its key's PUT event in etcd to the first call the xDS client sends it (p50, p99)",
		target: target{text: "first call p50 <= 50 ms, p99 <= 200 ms", check: func(r result) (string, bool) {
			p50, p99 := r.Metrics["first_call_p50_ms"], r.Metrics["first_call_p99_ms"]
			return fmt.Sprintf("p50 %.1f ms, p99 %.1f ms", p50, p99), r.Error == "" && p50 <= 50 && p99 <= 200
		}},
	},
	{
		name: "xds-kill", stacks: onlyXDS, group: groupXDS, run: stopOne(syscall.SIGKILL),
		event: "`kill -9` of one of 3 instances, xDS client", figure: "failed calls (retried by the route's retry policy)",
		target: zeroFailed,
	},
	{
		name: "xds-etcd-down", stacks: onlyXDS, group: groupXDS, run: etcdOutage(false),
		event:  "etcd `kill -9` for 10 s while the control plane runs, then back on the same data",
		figure: "failed calls; the client keeps its endpoints from the control plane's last snapshot",
		target: zeroFailed,
	},
	{
		name: "xds-cp-restart", stacks: onlyXDS, group: groupXDS, run: runControlPlaneRestart,
		event:  "the control plane stopped (SIGTERM) and started again under load",
		figure: "failed calls; how long it was away",
		target: target{text: "0 failed", check: func(r result) (string, bool) {
			f, ok := failedCalls(r)
			return fmt.Sprintf("%s; away %.0f ms", f, r.Metrics["control_plane_down_ms"]), ok
		}},
	},
}

func onlyXDS(bin string) []stack { return []stack{xdsStack(bin)} }

var zeroFailed = target{text: "0 failed", check: failedCalls}
