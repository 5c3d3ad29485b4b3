// Package config reads the client's configuration from flags, with
// environment variables as fallbacks.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/rollcall/rollcall/pkg/call"
	"github.com/rollcall/rollcall/pkg/discovery"
	"github.com/rollcall/rollcall/pkg/flagenv"
	"github.com/rollcall/rollcall/pkg/logs"
	"github.com/rollcall/rollcall/pkg/telemetry"
	"github.com/rollcall/rollcall/pkg/tlsfiles"
)

// Modes of the client.
const (
	// ModeDemo calls at a slow rate and prints every answer.
	ModeDemo = "demo"
	// ModeLoad calls from many workers in a closed loop for a duration
	// and prints a JSON summary.
	ModeLoad = "load"
)

// Config is everything the client reads at start.
type Config struct {
	Etcd      discovery.EtcdConfig
	Service   string
	Namespace string
	Name      string
	// Policy is the balancing policy; empty means rollcall's default.
	Policy string
	// TLS, when it names a file, makes calls over (mutual) TLS.
	TLS tlsfiles.Files
	// SnapshotDir, when set, keeps the last list of each service read
	// from etcd there, to start from when etcd is down at start.
	SnapshotDir string

	Mode        string
	Rate        float64       // demo: calls per second
	Concurrency int           // load: workers
	Duration    time.Duration // 0: until stopped
	Timeout     time.Duration // per call
	View        string        // table, lines, none, or auto
	Log         logs.Config
	Telemetry   telemetry.Config
}

// Load parses args over the environment (getenv). Its error names the bad
// flag or variable and value.
func Load(args []string, getenv func(string) string, usage io.Writer) (*Config, error) {
	c := &Config{Service: "greeter", Namespace: discovery.DefaultNamespace, Name: "rollcall", Mode: ModeDemo,
		Rate: 2, Concurrency: 32, Timeout: time.Second, View: "auto"}
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	fs.SetOutput(usage)
	env := map[string]string{
		"service": "TARGET_SERVICE", "namespace": "DISCOVERY_NAMESPACE", "mode": "CLIENT_MODE", "rate": "CLIENT_RATE",
		"concurrency": "CLIENT_CONCURRENCY", "duration": "CLIENT_DURATION", "timeout": "CLIENT_TIMEOUT",
		"view": "CLIENT_VIEW", "policy": "CLIENT_POLICY", "snapshot-dir": "DISCOVERY_SNAPSHOT_DIR",
	}
	c.Etcd.RegisterFlags(fs, env)
	fs.StringVar(&c.Service, "service", c.Service, "service to call")
	fs.StringVar(&c.Namespace, "namespace", c.Namespace, "first segment of etcd keys")
	fs.StringVar(&c.Name, "name", c.Name, "name to greet")
	fs.StringVar(&c.Policy, "policy", c.Policy, "balancing policy (default: rollcall's, "+call.DefaultPolicy+"; round_robin shows calls in turn)")
	fs.StringVar(&c.Mode, "mode", c.Mode, "demo (slow, every answer shown) or load (closed loop, JSON summary)")
	fs.Float64Var(&c.Rate, "rate", c.Rate, "demo: calls per second")
	fs.IntVar(&c.Concurrency, "concurrency", c.Concurrency, "load: concurrent workers")
	fs.DurationVar(&c.Duration, "duration", c.Duration, "how long to run (0: until interrupted)")
	fs.DurationVar(&c.Timeout, "timeout", c.Timeout, "deadline of each call")
	fs.StringVar(&c.View, "view", c.View, "table (redrawn in place), lines, none, or auto (table on a terminal)")
	fs.StringVar(&c.SnapshotDir, "snapshot-dir", c.SnapshotDir,
		"directory for the last list of each service read from etcd, used when etcd is down at start (off when empty)")
	call.RegisterTLSFlags(&c.TLS, fs, env)
	c.Log.RegisterFlags(fs, env)
	c.Telemetry.RegisterFlags(fs, env)
	if err := flagenv.Parse(fs, env, args, getenv); err != nil {
		return nil, err
	}
	c.Telemetry.ServiceName = "client"
	if err := c.validate(); err != nil {
		return nil, errors.New(strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	return c, nil
}

func (c *Config) validate() error {
	errs := []error{c.Etcd.Validate(), discovery.ValidateService(c.Service), discovery.ValidateNamespace(c.Namespace), c.TLS.Validate(),
		c.Telemetry.Validate()}
	if c.Mode != ModeDemo && c.Mode != ModeLoad {
		errs = append(errs, fmt.Errorf("invalid mode %q: want demo or load", c.Mode))
	}
	if c.Rate <= 0 || c.Rate > 10000 {
		errs = append(errs, fmt.Errorf("invalid rate %v: want 0 < rate <= 10000", c.Rate))
	}
	if c.Concurrency < 1 || c.Concurrency > 10000 {
		errs = append(errs, fmt.Errorf("invalid concurrency %d: want 1-10000", c.Concurrency))
	}
	if c.Duration < 0 {
		errs = append(errs, fmt.Errorf("invalid duration %v: want >= 0", c.Duration))
	}
	if c.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("invalid timeout %v: want > 0", c.Timeout))
	}
	switch c.View {
	case "auto", "table", "lines", "none":
	default:
		errs = append(errs, fmt.Errorf("invalid view %q: want table, lines, none or auto", c.View))
	}
	return errors.Join(errs...)
}
