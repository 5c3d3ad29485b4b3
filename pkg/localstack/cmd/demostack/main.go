// Command demostack runs rollcall's demo on this machine: etcd, greeter
// instances and the demo client, each a process of a pkg/localstack stack.
// `go run mage.go up`, `down` and `demo:*` run it from the repository's
// root, after building bin/etcd, bin/greeter and bin/client.
//
//	demostack up|down|kill|scale|rolling
//
// up runs until Ctrl-C; the demos kill, scale and rolling run three
// greeters and a 14 s client around one event. Settings come from the
// environment: GREETERS (up's instances, default 3), DETACH=1 (up in the
// background; down stops it), ETCD_ENDPOINTS (an etcd to use instead of
// starting one), TLS=1 (mutual TLS between the client and the greeters),
// CLIENT_POLICY (the client's balancer, default round_robin).
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
		return fmt.Errorf("want one command (up, down, kill, scale or rolling), got %q", os.Args[1:])
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	switch os.Args[1] {
	case "up":
		return up(ctx)
	case "down":
		return down()
	case "kill":
		return demo(ctx, killOne)
	case "scale":
		return demo(ctx, scaleUp)
	case "rolling":
		return demo(ctx, rollingReplace)
	case "bad-deploy": // round_robin never ejects: the client balances with rollcall's default
		os.Setenv("CLIENT_POLICY", "rollcall_p2c_ewma")
		return demo(ctx, badDeploy)
	}
	return fmt.Errorf("unknown command %q: want up, down, kill, scale or rolling", os.Args[1])
}
