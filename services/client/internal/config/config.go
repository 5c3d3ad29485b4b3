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

// Config is everything the client reads at start, in one part per layer.
type Config struct {
	Etcd      discovery.EtcdConfig
	Target    Target
	Calls     Calls
	Log       logs.Config
	Telemetry telemetry.Config
}

// Target is the service the client calls and how it reaches it.
type Target struct {
	Service   string
	Namespace string
	// Policy is the balancing policy; empty means rollcall's default.
	Policy string
	// Zone is the client's zone, for zone-aware routing (rollcall's
	// policies); empty turns it off.
	Zone string
	// TLS, when it names a file, makes calls over (mutual) TLS.
	TLS tlsfiles.Files
	// SnapshotDir, when set, keeps the last list of each service read
	// from etcd there, to start from when etcd is down at start.
	SnapshotDir string
	// XDS calls through the xDS control planes (services/xds) instead:
	// those registered in etcd, or those $GRPC_XDS_BOOTSTRAP names.
	XDS bool
}

// Calls is what the client calls with, and how often.
type Calls struct {
	Name        string        // to greet
	Mode        string        // ModeDemo or ModeLoad
	Rate        float64       // demo: calls per second
	Concurrency int           // load: workers
	Duration    time.Duration // 0: until stopped
	Timeout     time.Duration // per call
	View        string        // table, lines, json, none, or auto
}

// LogConfig is how the client logs.
func (c *Config) LogConfig() logs.Config { return c.Log }

// Load parses args over the environment (getenv). Its error names the bad
// flag or variable and value.
func Load(args []string, getenv func(string) string, usage io.Writer) (*Config, error) {
	c := &Config{
		Target: Target{Service: "greeter", Namespace: discovery.DefaultNamespace},
		Calls:  Calls{Name: "rollcall", Mode: ModeDemo, Rate: 2, Concurrency: 32, Timeout: time.Second, View: "auto"},
	}
	target, calls := &c.Target, &c.Calls
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	fs.SetOutput(usage)
	env := map[string]string{
		"service": "TARGET_SERVICE", "namespace": "DISCOVERY_NAMESPACE", "mode": "CLIENT_MODE", "rate": "CLIENT_RATE",
		"concurrency": "CLIENT_CONCURRENCY", "duration": "CLIENT_DURATION", "timeout": "CLIENT_TIMEOUT",
		"view": "CLIENT_VIEW", "policy": "CLIENT_POLICY", "snapshot-dir": "DISCOVERY_SNAPSHOT_DIR", "zone": "ZONE",
		"xds": "CLIENT_XDS",
	}
	c.Etcd.RegisterFlags(fs, env)
	fs.StringVar(&target.Service, "service", target.Service, "service to call")
	fs.StringVar(&target.Namespace, "namespace", target.Namespace, "first segment of etcd keys")
	fs.StringVar(&calls.Name, "name", calls.Name, "name to greet")
	fs.StringVar(&target.Policy, "policy", target.Policy, "balancing policy (default: rollcall's, "+call.DefaultPolicy+"; round_robin shows calls in turn)")
	fs.StringVar(&target.Zone, "zone", target.Zone,
		"this client's zone: calls stay with the instances registered in it while they have their share of the capacity (default: no zone-aware routing)")
	fs.StringVar(&calls.Mode, "mode", calls.Mode, "demo (slow, every answer shown) or load (closed loop, JSON summary)")
	fs.Float64Var(&calls.Rate, "rate", calls.Rate, "demo: calls per second")
	fs.IntVar(&calls.Concurrency, "concurrency", calls.Concurrency, "load: concurrent workers")
	fs.DurationVar(&calls.Duration, "duration", calls.Duration, "how long to run (0: until interrupted)")
	fs.DurationVar(&calls.Timeout, "timeout", calls.Timeout, "deadline of each call")
	fs.StringVar(&calls.View, "view", calls.View,
		"table (redrawn in place), lines, json (a snapshot per interval, for a program that draws its own view), none, or auto (table on a terminal)")
	fs.StringVar(&target.SnapshotDir, "snapshot-dir", target.SnapshotDir,
		"directory for the last list of each service read from etcd, used when etcd is down at start (off when empty)")
	fs.BoolVar(&target.XDS, "xds", false, "call through the xDS control planes registered in etcd (as xds), or named by $GRPC_XDS_BOOTSTRAP")
	call.RegisterTLSFlags(&target.TLS, fs, env)
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
	errs := []error{c.Etcd.Validate(), discovery.ValidateService(c.Target.Service), discovery.ValidateNamespace(c.Target.Namespace), c.Target.TLS.Validate(),
		c.Telemetry.Validate()}
	if len(c.Target.Zone) > 128 {
		errs = append(errs, fmt.Errorf("invalid zone of %d bytes: want at most 128", len(c.Target.Zone)))
	}
	if c.Calls.Mode != ModeDemo && c.Calls.Mode != ModeLoad {
		errs = append(errs, fmt.Errorf("invalid mode %q: want demo or load", c.Calls.Mode))
	}
	if c.Calls.Rate <= 0 || c.Calls.Rate > 10000 {
		errs = append(errs, fmt.Errorf("invalid rate %v: want 0 < rate <= 10000", c.Calls.Rate))
	}
	if c.Calls.Concurrency < 1 || c.Calls.Concurrency > 10000 {
		errs = append(errs, fmt.Errorf("invalid concurrency %d: want 1-10000", c.Calls.Concurrency))
	}
	if c.Calls.Duration < 0 {
		errs = append(errs, fmt.Errorf("invalid duration %v: want >= 0", c.Calls.Duration))
	}
	if c.Calls.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("invalid timeout %v: want > 0", c.Calls.Timeout))
	}
	switch c.Calls.View {
	case "auto", "table", "lines", "json", "none":
	default:
		errs = append(errs, fmt.Errorf("invalid view %q: want table, lines, json, none or auto", c.Calls.View))
	}
	return errors.Join(errs...)
}
