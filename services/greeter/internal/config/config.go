// Package config reads the greeter's configuration from flags, with
// environment variables as fallbacks.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"

	"github.com/rollcall/rollcall/pkg/discovery"
	"github.com/rollcall/rollcall/pkg/flagenv"
	"github.com/rollcall/rollcall/pkg/logs"
	"github.com/rollcall/rollcall/pkg/serve"
	"github.com/rollcall/rollcall/pkg/telemetry"
	"github.com/rollcall/rollcall/services/greeter/internal/service"
)

// Config is everything the greeter reads at start.
type Config struct {
	Serve serve.Config
	Etcd  discovery.EtcdConfig
	// Faults are artificial misbehaviours for demos and benchmarks: a
	// delay in every answer, a share of calls failed with a code, a slow
	// start. None by default.
	Faults    service.Faults
	Log       logs.Config
	Telemetry telemetry.Config
}

// LogConfig is how the greeter logs.
func (c *Config) LogConfig() logs.Config { return c.Log }

// Load parses args over the environment (getenv). Its error names the bad
// flag or variable and value.
func Load(args []string, getenv func(string) string, usage io.Writer) (*Config, error) {
	c := &Config{
		Serve: serve.Config{Listen: ":50051", Service: "greeter"},
	}
	fs := flag.NewFlagSet("greeter", flag.ContinueOnError)
	fs.SetOutput(usage)
	env := map[string]string{"latency": "GREETER_LATENCY", "fail-rate": "GREETER_FAIL_RATE", "fail-code": "GREETER_FAIL_CODE",
		"warmup-calls": "GREETER_WARMUP_CALLS"}
	c.Serve.RegisterFlags(fs, env)
	c.Etcd.RegisterFlags(fs, env)
	fs.DurationVar(&c.Faults.Latency, "latency", 0, "artificial delay in every answer")
	fs.Float64Var(&c.Faults.FailRate, "fail-rate", 0, "share of SayHello calls to fail with -fail-code, 0 to 1")
	failCode := fs.String("fail-code", "INTERNAL", "gRPC code of the failures -fail-rate injects (NOT_FOUND, UNAVAILABLE, ...)")
	fs.IntVar(&c.Faults.WarmupCalls, "warmup-calls", 0, "the first N SayHello calls take 10x -latency, as on a cold instance")
	c.Log.RegisterFlags(fs, env)
	c.Telemetry.RegisterFlags(fs, env)
	if err := flagenv.Parse(fs, env, args, getenv); err != nil {
		return nil, err
	}
	c.Telemetry.ServiceName = c.Serve.Service
	var errs []error
	errs = append(errs, c.Serve.Validate(), c.Etcd.Validate(), c.Telemetry.Validate())
	if c.Faults.Latency < 0 {
		errs = append(errs, fmt.Errorf("invalid latency %v: want >= 0", c.Faults.Latency))
	}
	if c.Faults.WarmupCalls < 0 {
		errs = append(errs, fmt.Errorf("invalid warmup-calls %d: want >= 0", c.Faults.WarmupCalls))
	}
	if !(c.Faults.FailRate >= 0 && c.Faults.FailRate <= 1) {
		errs = append(errs, fmt.Errorf("invalid fail-rate %v: want 0 to 1", c.Faults.FailRate))
	}
	if err := c.Faults.FailCode.UnmarshalJSON([]byte(strconv.Quote(*failCode))); err != nil || c.Faults.FailCode == codes.OK {
		errs = append(errs, fmt.Errorf("invalid fail-code %q: want a gRPC code other than OK, like NOT_FOUND", *failCode))
	}
	if err := errors.Join(errs...); err != nil {
		// One line: a process that will not start says why in one place.
		return nil, errors.New(strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	return c, nil
}
