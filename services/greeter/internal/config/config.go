// Package config reads the greeter's configuration from flags, with
// environment variables as fallbacks.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/rollcall/rollcall/pkg/discovery"
	"github.com/rollcall/rollcall/pkg/flagenv"
	"github.com/rollcall/rollcall/pkg/logs"
	"github.com/rollcall/rollcall/pkg/serve"
	"github.com/rollcall/rollcall/pkg/telemetry"
)

// Config is everything the greeter reads at start.
type Config struct {
	Serve serve.Config
	Etcd  discovery.EtcdConfig
	// Latency is an artificial delay in every answer, for demos and
	// benchmarks; 0 (the default) answers at once.
	Latency   time.Duration
	Log       logs.Config
	Telemetry telemetry.Config
}

// Load parses args over the environment (getenv). Its error names the bad
// flag or variable and value.
func Load(args []string, getenv func(string) string, usage io.Writer) (*Config, error) {
	c := &Config{
		Serve: serve.Config{Listen: ":50051", Service: "greeter"},
	}
	fs := flag.NewFlagSet("greeter", flag.ContinueOnError)
	fs.SetOutput(usage)
	env := map[string]string{"latency": "GREETER_LATENCY"}
	c.Serve.RegisterFlags(fs, env)
	c.Etcd.RegisterFlags(fs, env)
	fs.DurationVar(&c.Latency, "latency", 0, "artificial delay in every answer")
	c.Log.RegisterFlags(fs, env)
	c.Telemetry.RegisterFlags(fs, env)
	if err := flagenv.Parse(fs, env, args, getenv); err != nil {
		return nil, err
	}
	c.Telemetry.ServiceName = c.Serve.Service
	var errs []error
	errs = append(errs, c.Serve.Validate(), c.Etcd.Validate(), c.Telemetry.Validate())
	if c.Latency < 0 {
		errs = append(errs, fmt.Errorf("invalid latency %v: want >= 0", c.Latency))
	}
	if err := errors.Join(errs...); err != nil {
		// One line: a process that will not start says why in one place.
		return nil, errors.New(strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	return c, nil
}
