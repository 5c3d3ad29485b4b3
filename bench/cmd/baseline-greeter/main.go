// Command baseline-greeter is the benchmarks' baseline: a greeter built
// only from etcd's client/v3/naming packages, the way their documentation
// shows, with a careful shutdown (delete the endpoint, then GracefulStop).
// It is what rollcall is measured against; do not use it as a template.
// For the scenarios it has the rollcall greeter's faults (-latency,
// -fail-rate, -fail-code, -warmup-calls, SIGUSR1/SIGUSR2 outage drill),
// takes -zone (written into the endpoint's metadata, which round_robin
// does not read), and serves the same gRPC server metrics
// (-metrics-listen), so both count server calls alike. The scenarios
// give it a -listen port that no other process of theirs was given.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/naming/endpoints"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	greeterv1 "github.com/rollcall/rollcall/api/greeter/v1"
	"github.com/rollcall/rollcall/pkg/telemetry"
)

type greeter struct {
	greeterv1.UnimplementedGreeterServiceServer
	id       string
	latency  time.Duration
	failRate float64
	failCode codes.Code
	warmup   int64 // the first this many calls take ten times latency
	calls    atomic.Int64
	outage   atomic.Bool
}

func (g *greeter) SayHello(ctx context.Context, req *greeterv1.SayHelloRequest) (*greeterv1.SayHelloResponse, error) {
	if g.outage.Load() {
		return nil, status.Error(codes.Unavailable, "outage drill")
	}
	latency := g.latency
	if g.warmup > 0 && g.calls.Add(1) <= g.warmup {
		latency *= 10
	}
	if latency > 0 {
		select {
		case <-time.After(latency):
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	if g.failRate > 0 && rand.Float64() < g.failRate {
		return nil, status.Error(g.failCode, "injected failure")
	}
	return &greeterv1.SayHelloResponse{Message: "Hello " + req.GetName() + " from " + g.id, InstanceId: g.id}, nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "baseline-greeter:", err)
		os.Exit(1)
	}
}

func run() error {
	etcdAddr := flag.String("etcd-endpoints", "127.0.0.1:2379", "etcd endpoint")
	id := flag.String("id", "", "instance id")
	target := flag.String("target", "baseline/greeter", "endpoints target (key prefix)")
	ttl := flag.Int64("ttl", 10, "lease TTL in seconds")
	g := &greeter{}
	flag.DurationVar(&g.latency, "latency", 0, "artificial delay in every answer")
	flag.Float64Var(&g.failRate, "fail-rate", 0, "share of calls to fail with -fail-code")
	failCode := flag.String("fail-code", "INTERNAL", "gRPC code of injected failures")
	flag.Int64Var(&g.warmup, "warmup-calls", 0, "the first N calls take 10x -latency")
	zone := flag.String("zone", "", "zone, written into the endpoint's metadata")
	metrics := flag.String("metrics-listen", "", "address of the /metrics server (default: none)")
	listen := flag.String("listen", "127.0.0.1:0", "address to serve gRPC on")
	flag.Parse()
	g.id = *id
	if err := g.failCode.UnmarshalJSON([]byte(strconv.Quote(*failCode))); err != nil {
		return fmt.Errorf("invalid fail-code %q: %w", *failCode, err)
	}
	tel, stopTel, err := telemetry.New(telemetry.Config{MetricsListen: *metrics}, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer stopTel()
	drill := make(chan os.Signal, 1)
	signal.Notify(drill, syscall.SIGUSR1, syscall.SIGUSR2)
	go func() { // runs until the process exits
		for sig := range drill {
			g.outage.Store(sig == syscall.SIGUSR1)
		}
	}()

	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen on -listen %q: %w", *listen, err)
	}
	addr := lis.Addr().String()
	s := grpc.NewServer(tel.ServerOptions()...)
	greeterv1.RegisterGreeterServiceServer(s, g)
	go s.Serve(lis)

	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{*etcdAddr}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	defer cli.Close()
	em, err := endpoints.NewManager(cli, *target)
	if err != nil {
		return err
	}
	ctx := context.Background()
	lease, err := cli.Grant(ctx, *ttl)
	if err != nil {
		return err
	}
	key := *target + "/" + *id
	var md any
	if *zone != "" {
		md = map[string]string{"zone": *zone}
	}
	if err := em.AddEndpoint(ctx, key, endpoints.Endpoint{Addr: addr, Metadata: md}, clientv3.WithLease(lease.ID)); err != nil {
		return err
	}
	ka, err := cli.KeepAlive(ctx, lease.ID)
	if err != nil {
		return err
	}
	go func() {
		for range ka {
		}
	}()

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	em.DeleteEndpoint(dctx, key)
	cancel()
	s.GracefulStop()
	return nil
}
