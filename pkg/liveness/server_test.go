package liveness_test

import (
	"context"
	"testing"

	"go.uber.org/goleak"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/rollcall/rollcall/pkg/liveness"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// A liveness probe finds the process alive while it drains and stops
// (every status NOT_SERVING); readiness, asking for a service name, does
// not.
func TestCheckAnswersLivenessWhileNotServing(t *testing.T) {
	hs := health.NewServer()
	hs.SetServingStatus("greeter", healthpb.HealthCheckResponse_SERVING)
	hs.Shutdown()
	h := liveness.NewHealthServer(hs, make(chan struct{}))
	ctx := context.Background()
	alive, err := h.Check(ctx, &healthpb.HealthCheckRequest{Service: liveness.Service})
	if err != nil || alive.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("liveness: %v %v, want SERVING", alive.GetStatus(), err)
	}
	ready, err := h.Check(ctx, &healthpb.HealthCheckRequest{Service: "greeter"})
	if err != nil || ready.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("readiness: %v %v, want NOT_SERVING", ready.GetStatus(), err)
	}
}
