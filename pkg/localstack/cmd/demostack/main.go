// Command demostack runs rollcall's demo on this machine: etcd, greeter
// instances and the demo client, each a process of a pkg/localstack stack.
// `go run mage.go up`, `down` and `demo:*` run it from the repository's
// root, after building bin/etcd, bin/greeter and bin/client.
//
//	demostack up|down|kill|scale|rolling|bad-deploy
//
// up runs until stopped: Ctrl-C, q in the live view, SIGTERM or SIGHUP,
// `demostack down`, or the exit of its parent (mage). On a terminal it
// shows a live view, redrawn in place: a row per instance (calls/s, share,
// p50/p99, errors, state), the policy, and the events of the stack (an
// instance registered, deregistered, killed, etcd unreachable); every
// process's lines go to .run/logs/up.log. Elsewhere (a pipe, a file) it
// writes every process's lines, prefixed with its name.
//
// Its supervisor, this process, takes requests on .run/control.sock: the
// demos kill, scale, rolling and bad-deploy run on its stack, so that their effect
// shows in the view watched, and down stops it. With no stack running, a
// demo starts one of its own: three greeters and a 14 s client around one
// event.
//
// Processes die with the stack however it ends: each is killed by the
// kernel when the supervisor dies (even by SIGKILL; the next up then finds
// their PID file stale), and the supervisor stops them in order when its
// output closes or its parent dies.
//
// Settings come from the environment: GREETERS (up's instances, default
// 3), DETACH=1 (up in the background, under a supervisor of its own; down
// stops it), ETCD_ENDPOINTS (an etcd to use instead of starting one),
// TLS=1 (mutual TLS between the client and the greeters), CLIENT_POLICY
// (the client's balancer, default round_robin; rollcall_p2c_ewma for a
// bad-deploy demo's own stack, so that the bad instance is ejected).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demostack:", err)
		os.Exit(1)
	}
}

func run() error {
	if len(os.Args) != 2 {
		return fmt.Errorf("want one command (up, down, kill, scale, rolling or bad-deploy), got %q", os.Args[1:])
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	// A write to a closed pipe returns EPIPE rather than kill this
	// process: it must still stop its stack.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	switch cmd := os.Args[1]; cmd {
	case "up":
		return up(ctx)
	case "supervise": // started by up with DETACH=1
		return superviseDetached(ctx)
	case "down":
		return down(ctx)
	default:
		if d, ok := demos[cmd]; ok {
			if cmd == "bad-deploy" && os.Getenv("CLIENT_POLICY") == "" {
				// For a stack of its own: round_robin never ejects.
				os.Setenv("CLIENT_POLICY", "rollcall_p2c_ewma")
			}
			return runDemo(ctx, cmd, d)
		}
		return fmt.Errorf("unknown command %q: want up, down, kill, scale, rolling or bad-deploy", cmd)
	}
}
