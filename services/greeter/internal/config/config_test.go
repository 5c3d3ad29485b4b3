package config_test

import (
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/rollcall/rollcall/services/greeter/internal/config"
	"github.com/rollcall/rollcall/services/greeter/internal/service"
)

// load runs Load with env as the whole environment: Load reads variables
// only through getenv, so the developer's own never reach a test.
func load(args []string, env map[string]string) (*config.Config, error) {
	return config.Load(args, func(k string) string { return env[k] }, io.Discard)
}

func TestLoadDefaultsHaveNoFaults(t *testing.T) {
	c, err := load(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Faults != (service.Faults{FailCode: codes.Internal}) {
		t.Errorf("faults = %+v, want none (fail code INTERNAL, unused)", c.Faults)
	}
	if c.Serve.Listen != ":50051" || c.Serve.Service != "greeter" || c.Telemetry.ServiceName != "greeter" {
		t.Errorf("listen %q, service %q, telemetry service %q; want :50051, greeter, greeter", c.Serve.Listen, c.Serve.Service, c.Telemetry.ServiceName)
	}
	if got := c.Etcd.Endpoints.String(); got != "127.0.0.1:2379" {
		t.Errorf("etcd endpoints %q, want 127.0.0.1:2379", got)
	}
}

func TestLoadFaultsTakeFlagOverEnvironment(t *testing.T) {
	env := map[string]string{"GREETER_LATENCY": "250ms", "GREETER_FAIL_RATE": "0.5", "GREETER_FAIL_CODE": "UNAVAILABLE"}
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want service.Faults
	}{
		{"environment", nil, env, service.Faults{Latency: 250 * time.Millisecond, FailRate: 0.5, FailCode: codes.Unavailable}},
		{"flags", []string{"-latency", "1s", "-fail-rate", "1", "-fail-code", "NOT_FOUND"}, nil,
			service.Faults{Latency: time.Second, FailRate: 1, FailCode: codes.NotFound}},
		{"flags over environment", []string{"-latency", "0s", "-fail-rate", "0.25", "-fail-code", "RESOURCE_EXHAUSTED"}, env,
			service.Faults{FailRate: 0.25, FailCode: codes.ResourceExhausted}},
		{"a flag over its variable only", []string{"-fail-rate", "0"}, env,
			service.Faults{Latency: 250 * time.Millisecond, FailRate: 0, FailCode: codes.Unavailable}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := load(tt.args, tt.env)
			if err != nil {
				t.Fatal(err)
			}
			if c.Faults != tt.want {
				t.Errorf("faults = %+v, want %+v", c.Faults, tt.want)
			}
		})
	}
}

// Each bad value stops the greeter with one line naming the flag (or the
// variable it came from) and the value.
func TestLoadRejectsEveryBadValueNamingFlagAndValue(t *testing.T) {
	tests := []struct {
		args    []string
		env     map[string]string
		wantErr string
	}{
		// The greeter's own flags.
		{[]string{"-latency", "-1s"}, nil, "invalid latency -1s: want >= 0"},
		{[]string{"-latency", "soon"}, nil, `invalid value "soon" for flag -latency`},
		{nil, map[string]string{"GREETER_LATENCY": "soon"}, `invalid GREETER_LATENCY="soon"`},
		{nil, map[string]string{"GREETER_LATENCY": "-5ms"}, "invalid latency -5ms: want >= 0"},
		{[]string{"-fail-rate", "1.5"}, nil, "invalid fail-rate 1.5: want 0 to 1"},
		{[]string{"-fail-rate", "-0.1"}, nil, "invalid fail-rate -0.1: want 0 to 1"},
		{[]string{"-fail-rate", "NaN"}, nil, "invalid fail-rate NaN: want 0 to 1"},
		{[]string{"-fail-rate", "half"}, nil, `invalid value "half" for flag -fail-rate`},
		{nil, map[string]string{"GREETER_FAIL_RATE": "half"}, `invalid GREETER_FAIL_RATE="half"`},
		{nil, map[string]string{"GREETER_FAIL_RATE": "2"}, "invalid fail-rate 2: want 0 to 1"},
		{[]string{"-fail-code", "OK"}, nil, `invalid fail-code "OK": want a gRPC code other than OK`},
		{[]string{"-fail-code", "not_found"}, nil, `invalid fail-code "not_found"`},
		{[]string{"-fail-code", "NotFound"}, nil, `invalid fail-code "NotFound"`},
		{[]string{"-fail-code", "5"}, nil, `invalid fail-code "5"`},
		{[]string{"-fail-code", ""}, nil, `invalid fail-code ""`},
		{nil, map[string]string{"GREETER_FAIL_CODE": "TEAPOT"}, `invalid fail-code "TEAPOT"`},
		// Serving, etcd and telemetry flags, which the greeter takes from pkg.
		{[]string{"-listen", "50051"}, nil, `invalid listen address "50051"`},
		{nil, map[string]string{"LISTEN_ADDR": ":99999"}, `invalid listen address ":99999"`},
		{[]string{"-advertise", "greeter"}, nil, `advertise: invalid address "greeter"`},
		{[]string{"-service", "../etc"}, nil, `invalid service name "../etc"`},
		{[]string{"-namespace", "a//b"}, nil, `invalid namespace "a//b"`},
		{[]string{"-id", "g/1"}, nil, `invalid instance ID "g/1"`},
		{[]string{"-ttl", "500ms"}, nil, "invalid ttl 500ms"},
		{nil, map[string]string{"REGISTER_TTL": "long"}, `invalid REGISTER_TTL="long"`},
		{[]string{"-weight", "70000"}, nil, "invalid weight 70000"},
		{[]string{"-labels", "zone"}, nil, `invalid value "zone" for flag -labels`},
		{[]string{"-drain-delay", "-1s"}, nil, `invalid value "-1s" for flag -drain-delay: want >= 0`},
		{nil, map[string]string{"DRAIN_DELAY": "-1s"}, `invalid DRAIN_DELAY="-1s": want >= 0`},
		{[]string{"-stop-timeout", "0s"}, nil, "invalid stop-timeout 0s"},
		{nil, map[string]string{"ETCD_ENDPOINTS": "localhost"}, `invalid etcd endpoint "localhost"`},
		{[]string{"-metrics-listen", "9464"}, nil, `invalid metrics-listen address "9464"`},
		{nil, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "grpc://collector:4317"}, `invalid OTLP endpoint "grpc://collector:4317"`},
		{[]string{"serve"}, nil, `unexpected arguments ["serve"]`},
	}
	for _, tt := range tests {
		t.Run(tt.wantErr, func(t *testing.T) {
			_, err := load(tt.args, tt.env)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || strings.Contains(err.Error(), "\n") {
				t.Errorf("Load error = %v, want one line containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestLoadReportsAllBadFaultsInOneLine(t *testing.T) {
	_, err := load([]string{"-latency", "-1s", "-fail-rate", "2", "-fail-code", "OK"}, nil)
	want := `invalid latency -1s: want >= 0; invalid fail-rate 2: want 0 to 1; ` +
		`invalid fail-code "OK": want a gRPC code other than OK, like NOT_FOUND`
	if err == nil || err.Error() != want {
		t.Errorf("Load error = %v\nwant %s", err, want)
	}
}

// -h lists the fault flags with their variables, in the format that
// deployments' tests read.
func TestHelpListsTheFaultVariables(t *testing.T) {
	var usage strings.Builder
	_, err := config.Load([]string{"-h"}, func(string) string { return "" }, &usage)
	if !errors.Is(err, flag.ErrHelp) {
		t.Errorf("Load(-h) error = %v, want flag.ErrHelp", err)
	}
	for _, line := range []string{
		"  -fail-code  <- $GREETER_FAIL_CODE\n",
		"  -fail-rate  <- $GREETER_FAIL_RATE\n",
		"  -latency  <- $GREETER_LATENCY\n",
		`gRPC code of the failures -fail-rate injects (NOT_FOUND, UNAVAILABLE, ...) (default "INTERNAL")`,
	} {
		if !strings.Contains(usage.String(), line) {
			t.Errorf("usage lacks %q:\n%s", line, usage.String())
		}
	}
}
