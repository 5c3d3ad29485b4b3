package server_test

import (
	"context"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	greeterv1 "github.com/rollcall/rollcall/api/greeter/v1"
	"github.com/rollcall/rollcall/pkg/discovery"
	"github.com/rollcall/rollcall/pkg/etcdtest"
	"github.com/rollcall/rollcall/pkg/serve"
	"github.com/rollcall/rollcall/pkg/telemetry"
	"github.com/rollcall/rollcall/services/greeter/internal/biz"
	"github.com/rollcall/rollcall/services/greeter/internal/server"
	"github.com/rollcall/rollcall/services/greeter/internal/service"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// ctx bounds a test's waits, so that one that never ends fails the test
// rather than hanging it.
func ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// telemetryOff is the telemetry of a greeter configured with none.
func telemetryOff(t *testing.T) *telemetry.Telemetry {
	t.Helper()
	tel, cleanup, err := telemetry.New(telemetry.Config{ServiceName: "greeter"}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cleanup)
	return tel
}

// The greeter runs as cmd/greeter assembles it (wire_gen.go), without the
// signal drill: a client finds the greeter API, health and reflection on
// it, and health reports the greeter API SERVING.
func TestGreeterServerServesTheAPIWithHealthAndReflection(t *testing.T) {
	etcd := etcdtest.Start(t).Client()
	cfg := serve.Config{Listen: "127.0.0.1:0", Service: "greeter", ID: "g1", DrainDelay: -1, StopTimeout: 5 * time.Second}
	s, cleanup, err := server.Listen(cfg, etcd, telemetryOff(t), quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cleanup)
	inst := server.Instance(s)
	srv := server.NewGRPCServer(s, service.NewGreeter(biz.NewGreeter(inst), service.Faults{}, nil))
	runCtx, stop := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- srv.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-ran; err != nil {
			t.Errorf("Run: %v", err)
		}
	})

	cc, err := grpc.NewClient(inst.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })

	// Health first: it says when the server has set up its services.
	watch, err := healthpb.NewHealthClient(cc).Watch(ctx(t), &healthpb.HealthCheckRequest{Service: greeterv1.GreeterService_ServiceDesc.ServiceName})
	if err != nil {
		t.Fatal(err)
	}
	for {
		resp, err := watch.Recv()
		if err != nil {
			t.Fatalf("health of %s never SERVING: %v", greeterv1.GreeterService_ServiceDesc.ServiceName, err)
		}
		if resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			break
		}
	}

	refl, err := reflectionpb.NewServerReflectionClient(cc).ServerReflectionInfo(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := refl.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := refl.Recv()
	if err != nil {
		t.Fatal(err)
	}
	refl.CloseSend()
	var services []string
	for _, svc := range resp.GetListServicesResponse().GetService() {
		services = append(services, svc.GetName())
	}
	for _, want := range []string{"greeter.v1.GreeterService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} {
		if !slices.Contains(services, want) {
			t.Errorf("reflection lists %v, without %s", services, want)
		}
	}

	// The greeter answers in the name of the instance the server registers.
	hello, err := greeterv1.NewGreeterServiceClient(cc).SayHello(ctx(t), &greeterv1.SayHelloRequest{Name: "rollcall"})
	if want := "Hello rollcall from g1 (" + inst.Addr + ")"; err != nil || hello.GetMessage() != want || hello.GetInstanceId() != "g1" {
		t.Errorf("SayHello = %v, %v; want %q from g1", hello, err, want)
	}
}

func TestListenOnATakenPortFailsNamingTheAddress(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg := serve.Config{Listen: taken.Addr().String(), Service: "greeter"}
	// Listening comes before any use of etcd: no client is needed to fail.
	_, _, err = server.Listen(cfg, nil, telemetryOff(t), quiet())
	if want := "listen on " + taken.Addr().String(); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Listen error = %v, want one containing %q", err, want)
	}
}

// drillLog passes on the "on" of each "outage drill" record: the drill
// logs after it has switched, so a record means the switch is done.
type drillLog struct{ on chan bool }

func (h drillLog) Enabled(context.Context, slog.Level) bool { return true }
func (h drillLog) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h drillLog) WithGroup(string) slog.Handler            { return h }

func (h drillLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "outage drill" {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "on" {
				h.on <- a.Value.Bool()
			}
			return true
		})
	}
	return nil
}

// The signals go to this test process, which is safe while the drill's
// signal.Notify holds them: each is sent only then, and the test waits for
// the drill to act on it before the next, and before the cleanup hands
// the signals back to their default action (exit).
func TestOutageDrillTurnsOnWithSIGUSR1AndOffWithSIGUSR2(t *testing.T) {
	log := drillLog{on: make(chan bool, 1)}
	outage, cleanup := server.NewOutageDrill(slog.New(log))
	defer cleanup()
	g := service.NewGreeter(biz.NewGreeter(discovery.Instance{ID: "g1", Addr: "127.0.0.1:50051"}), service.Faults{}, outage)

	for _, step := range []struct {
		sig  syscall.Signal
		on   bool
		want codes.Code
	}{
		{syscall.SIGUSR1, true, codes.Unavailable},
		{syscall.SIGUSR1, true, codes.Unavailable}, // again: stays on
		{syscall.SIGUSR2, false, codes.OK},
		{syscall.SIGUSR1, true, codes.Unavailable},
		{syscall.SIGUSR2, false, codes.OK},
	} {
		if err := syscall.Kill(os.Getpid(), step.sig); err != nil {
			t.Fatal(err)
		}
		select {
		case on := <-log.on:
			if on != step.on {
				t.Fatalf("after %v the drill logged on=%v, want %v", step.sig, on, step.on)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("the drill did not act on %v within 30s", step.sig)
		}
		_, err := g.SayHello(ctx(t), &greeterv1.SayHelloRequest{Name: "rollcall"})
		if status.Code(err) != step.want {
			t.Errorf("after %v SayHello = %v, want %v", step.sig, err, step.want)
		}
	}
}
