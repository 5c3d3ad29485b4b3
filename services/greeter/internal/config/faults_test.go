package config_test

import (
	"io"
	"strings"
	"testing"

	"github.com/rollcall/rollcall/services/greeter/internal/config"
)

func TestFaults(t *testing.T) {
	env := map[string]string{"GREETER_WARMUP_CALLS": "200", "GREETER_LATENCY": "2ms"}
	c, err := config.Load([]string{"-fail-rate", "1"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if f := c.Faults; f.WarmupCalls != 200 || f.Latency.String() != "2ms" || f.FailRate != 1 || f.FailCode.String() != "Internal" {
		t.Errorf("faults %+v, want 200 warm-up calls, 2ms, every call failed with INTERNAL", f)
	}
}

func TestLoadRejectsBadFaults(t *testing.T) {
	tests := []struct {
		args    []string
		wantErr string
	}{
		{[]string{"-warmup-calls", "-1"}, "invalid warmup-calls -1"},
		{[]string{"-latency", "-1s"}, "invalid latency -1s"},
		{[]string{"-fail-rate", "2"}, "invalid fail-rate 2"},
		{[]string{"-fail-code", "OK"}, `invalid fail-code "OK"`},
		{[]string{"-fail-code", "BROKEN"}, `invalid fail-code "BROKEN"`},
	}
	for _, tt := range tests {
		t.Run(tt.wantErr, func(t *testing.T) {
			_, err := config.Load(tt.args, func(string) string { return "" }, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || strings.Contains(err.Error(), "\n") {
				t.Errorf("Load error = %v, want one line containing %q", err, tt.wantErr)
			}
		})
	}
}
