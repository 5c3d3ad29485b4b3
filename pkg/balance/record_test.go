package balance

import (
	"testing"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

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
