package serve

import (
	"context"
	"time"

	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/rollcall/rollcall/pkg/balance"
)

// heartbeatHealth is gRPC's health server plus a heartbeat: a Watch of
// balance.LivenessService gets the server's overall status every
// balance.LivenessInterval, so load-aware balancers notice a process that
// stopped answering (SIGSTOP, a stuck host) within a fraction of a second.
// Every other Watch is the standard one, sent on change only.
type heartbeatHealth struct {
	*health.Server
	// stopping is closed when the server stops, so that heartbeat streams
	// end and do not hold GracefulStop.
	stopping chan struct{}
}

// Check answers SERVING for balance.LivenessService for as long as the
// process answers at all, through the drain and graceful stop too: it is
// what a liveness probe (Kubernetes') should ask, while readiness asks for
// the service name, which turns NOT_SERVING on SIGTERM.
func (h heartbeatHealth) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	if req.GetService() == balance.LivenessService {
		return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
	}
	return h.Server.Check(ctx, req)
}

func (h heartbeatHealth) Watch(req *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	if req.GetService() != balance.LivenessService {
		return h.Server.Watch(req, stream)
	}
	tick := time.NewTicker(balance.LivenessInterval)
	defer tick.Stop()
	for {
		resp, err := h.Check(stream.Context(), &healthpb.HealthCheckRequest{})
		if err != nil {
			return err
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
		select {
		case <-stream.Context().Done():
			return stream.Context().Err()
		case <-h.stopping:
			return nil
		case <-tick.C:
		}
	}
}
