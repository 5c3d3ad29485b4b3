package liveness

import (
	"context"
	"time"

	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// HealthServer is gRPC's health server plus the heartbeat: a Watch of
// Service gets the server's overall status every Interval, so load-aware
// balancers notice a process that stopped answering (SIGSTOP, a stuck
// host) within a fraction of a second. Every other Watch is the standard
// one, sent on change only.
type HealthServer struct {
	*health.Server
	// stopping is closed when the server stops, so that heartbeat streams
	// end and do not hold GracefulStop.
	stopping <-chan struct{}
}

// NewHealthServer adds the heartbeat to hs. Closing stopping ends the
// heartbeat streams; close it when the gRPC server's graceful stop begins.
func NewHealthServer(hs *health.Server, stopping <-chan struct{}) HealthServer {
	return HealthServer{Server: hs, stopping: stopping}
}

// Check answers SERVING for Service for as long as the process answers at
// all, through the drain and graceful stop too: it is what a liveness
// probe (Kubernetes') should ask, while readiness asks for the service
// name, which turns NOT_SERVING on SIGTERM.
func (h HealthServer) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	if req.GetService() == Service {
		return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
	}
	return h.Server.Check(ctx, req)
}

// Watch sends the heartbeat on a watch of Service, and the standard
// updates on any other.
func (h HealthServer) Watch(req *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	if req.GetService() != Service {
		return h.Server.Watch(req, stream)
	}
	tick := time.NewTicker(Interval)
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
