package config_test

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/rollcall/rollcall/services/client/internal/config"
)

func TestLoadDefaultsAndEnvironment(t *testing.T) {
	env := map[string]string{"CLIENT_MODE": "load", "CLIENT_CONCURRENCY": "8", "ETCD_ENDPOINTS": "10.0.0.1:2379,10.0.0.2:2379", "ZONE": "eu-west-1a"}
	c, err := config.Load([]string{"-concurrency", "16"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Calls.Mode != "load" || c.Calls.Concurrency != 16 || c.Target.Service != "greeter" || c.Calls.Timeout != time.Second || c.Target.Zone != "eu-west-1a" {
		t.Errorf("config = %+v; want load mode, the flag's concurrency 16 over the variable's 8, service greeter, timeout 1s, zone eu-west-1a", c)
	}
	if got := c.Etcd.Endpoints.String(); got != "10.0.0.1:2379,10.0.0.2:2379" {
		t.Errorf("etcd endpoints = %q", got)
	}
}

func TestLoadRejectsBadValuesInOneLine(t *testing.T) {
	tests := []struct {
		args    []string
		env     map[string]string
		wantErr string
	}{
		{[]string{"-mode", "fast"}, nil, `invalid mode "fast"`},
		{[]string{"-concurrency", "0"}, nil, "invalid concurrency 0"},
		{[]string{"-rate", "-1"}, nil, "invalid rate -1"},
		{[]string{"-timeout", "0s"}, nil, "invalid timeout 0s"},
		{[]string{"-view", "3d"}, nil, `invalid view "3d"`},
		{[]string{"-service", "../etc"}, nil, `invalid service name "../etc"`},
		{nil, map[string]string{"ZONE": strings.Repeat("z", 200)}, "invalid zone of 200 bytes: want at most 128"},
		{nil, map[string]string{"CLIENT_DURATION": "forever"}, `invalid CLIENT_DURATION="forever"`},
		{nil, map[string]string{"ETCD_ENDPOINTS": "localhost"}, `invalid etcd endpoint "localhost"`},
		{nil, map[string]string{"ETCD_USERNAME": "root"}, "username and password go together"},
		{[]string{"extra"}, nil, `unexpected arguments ["extra"]`},
		{[]string{"-metrics-listen", "9464"}, nil, `invalid metrics-listen address "9464"`},
		{nil, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "grpc://collector:4317"}, `invalid OTLP endpoint "grpc://collector:4317"`},
	}
	for _, tt := range tests {
		t.Run(tt.wantErr, func(t *testing.T) {
			_, err := config.Load(tt.args, func(k string) string { return tt.env[k] }, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || strings.Contains(err.Error(), "\n") {
				t.Errorf("Load error = %v, want one line containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestPasswordNeverShown(t *testing.T) {
	env := map[string]string{"ETCD_USERNAME": "svc", "ETCD_PASSWORD": "hunter2"}
	c, err := config.Load(nil, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if s := c.Etcd.String(); strings.Contains(s, "hunter2") {
		t.Errorf("etcd config prints its password: %s", s)
	}
}
