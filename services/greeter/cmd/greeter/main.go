// Command greeter serves the greeter API and registers itself in etcd, so
// clients find it by name. Run with -h for its flags and environment.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/rollcall/rollcall/pkg/logs"
	"github.com/rollcall/rollcall/services/greeter/internal/config"
)

func main() {
	if err := run(); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "greeter:", err)
		}
		os.Exit(2)
	}
}

func run() error {
	cfg, err := config.Load(os.Args[1:], os.Getenv, os.Stderr)
	if err != nil {
		return err
	}
	log, err := logs.New(os.Stderr, cfg.Log.Level, cfg.Log.Format)
	if err != nil {
		return err
	}
	logs.SetDefault(log)
	app, cleanup, err := wireApp(cfg, log)
	if err != nil {
		return err
	}
	defer cleanup()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// A second signal ends the process at once: the orderly stop the first
	// one began may be waiting on etcd or on calls.
	context.AfterFunc(ctx, stop)
	return app.Run(ctx)
}
