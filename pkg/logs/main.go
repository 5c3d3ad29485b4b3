package logs

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

// Configured is a command's configuration: it says how the command logs.
type Configured interface {
	LogConfig() Config
}

// Runner is a command assembled: it runs until its context ends.
type Runner interface {
	Run(ctx context.Context) error
}

// Main is the body of a rollcall command's main, which passes its result
// to os.Exit. It loads the configuration from the command line and the
// environment, makes the logger the configuration asks for (on standard
// error) the default of every library (SetDefault), assembles the
// command with build (a wire injector) and runs it until SIGINT or
// SIGTERM; build's cleanup runs after. A second signal ends the process
// at once: the orderly stop the first one began may be waiting on etcd or
// on calls. Main returns 0, or 2 after printing "name: error" (only the
// usage, for -h).
func Main[C Configured, R Runner](name string,
	load func(args []string, getenv func(string) string, usage io.Writer) (C, error),
	build func(C, *slog.Logger) (R, func(), error),
) int {
	if err := run(load, build); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		}
		return 2
	}
	return 0
}

func run[C Configured, R Runner](
	load func(args []string, getenv func(string) string, usage io.Writer) (C, error),
	build func(C, *slog.Logger) (R, func(), error),
) error {
	cfg, err := load(os.Args[1:], os.Getenv, os.Stderr)
	if err != nil {
		return err
	}
	lc := cfg.LogConfig()
	log, err := New(os.Stderr, lc.Level, lc.Format)
	if err != nil {
		return err
	}
	SetDefault(log)
	cmd, cleanup, err := build(cfg, log)
	if err != nil {
		return err
	}
	defer cleanup()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, stop)
	return cmd.Run(ctx)
}
