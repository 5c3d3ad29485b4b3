package balance

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestParseConfigNamesTheBadField(t *testing.T) {
	tests := []struct {
		policy, json, wantErr string
	}{
		{P2CEWMA, `{}`, ""},
		{P2CEWMA, `{"slowFactor":3,"stuckFactor":8,"failurePenalty":"250ms","exploreShare":0}`, ""},
		{P2CEWMA, `{"slowFactor":0.5}`, "slowFactor 0.5"},
		{P2CEWMA, `{"stuckFactor":0.5}`, "stuckFactor 0.5"},
		{P2CEWMA, `{"exploreShare":0.9}`, "exploreShare 0.9"},
		{P2CEWMA, `{"failurePenalty":"0s"}`, "failurePenalty 0s"},
		{P2CEWMA, `{"failurePenalty":"soon"}`, `"soon" is not a duration`},
		{P2CEWMA, `{"slowness":2}`, `unknown field "slowness"`},
		{P2CEWMA, `{"vanishGrace":"0s"}`, ""},
		{P2CEWMA, `{"vanishGrace":"-1s"}`, "vanishGrace -1s"},
		{Weighted, `{"vanishGrace":"1h"}`, "vanishGrace 1h0m0s"},
		{Weighted, `{}`, ""},
		{Weighted, `{"slowFactor":2}`, `unknown field "slowFactor"`},
	}
	for _, tt := range tests {
		t.Run(tt.policy+" "+tt.json, func(t *testing.T) {
			_, err := balancer.Get(tt.policy).(balancer.ConfigParser).ParseConfig([]byte(tt.json))
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("error %v, want none", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
	cfg, _ := parseP2CConfig([]byte(`{"slowFactor":3}`))
	if c := cfg.(*P2CConfig); c.SlowFactor != 3 || c.StuckFactor != 4 || time.Duration(c.FailurePenalty) != time.Second ||
		time.Duration(c.VanishGrace) != 30*time.Second {
		t.Errorf("config %+v: want slowFactor 3 and the other defaults", c)
	}
}

func TestOnlyWhatMeansTheInstanceCountsAgainstIt(t *testing.T) {
	err := func(c codes.Code) error { return status.Error(c, "x") }
	tests := []struct {
		name          string
		di            balancer.DoneInfo
		cut           cut
		callerHadTime bool
		want          verdict
	}{
		{"OK", balancer.DoneInfo{BytesSent: true, BytesReceived: true}, notCut, true, answered},
		{"picked again before sending", balancer.DoneInfo{}, notCut, true, ignored},
		{"NOT_FOUND", balancer.DoneInfo{Err: err(codes.NotFound), BytesReceived: true}, notCut, true, answered},
		{"INVALID_ARGUMENT", balancer.DoneInfo{Err: err(codes.InvalidArgument), BytesReceived: true}, notCut, true, answered},
		{"FAILED_PRECONDITION", balancer.DoneInfo{Err: err(codes.FailedPrecondition)}, notCut, true, answered},
		{"UNAVAILABLE", balancer.DoneInfo{Err: err(codes.Unavailable)}, notCut, true, failed},
		{"RESOURCE_EXHAUSTED", balancer.DoneInfo{Err: err(codes.ResourceExhausted)}, notCut, true, failed},
		{"deadline, caller had time", balancer.DoneInfo{Err: err(codes.DeadlineExceeded)}, notCut, true, failed},
		{"deadline, the caller's", balancer.DoneInfo{Err: err(codes.DeadlineExceeded)}, notCut, false, atLeast},
		{"caller cancelled", balancer.DoneInfo{Err: err(codes.Canceled)}, notCut, true, ignored},
		{"cut: instance stalled", balancer.DoneInfo{Err: err(codes.Canceled)}, stalled, true, failed},
		{"cut: another attempt answered", balancer.DoneInfo{Err: err(codes.Canceled)}, lost, true, atLeast},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := judge(tt.di, tt.cut, tt.callerHadTime); got != tt.want {
				t.Errorf("judge = %v, want %v", got, tt.want)
			}
		})
	}
}
