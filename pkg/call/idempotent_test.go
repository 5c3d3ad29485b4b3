package call_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/rollcall/rollcall/pkg/call"
	"github.com/rollcall/rollcall/pkg/discovery"
	"github.com/rollcall/rollcall/pkg/discovery/discoverytest"
	"github.com/rollcall/rollcall/pkg/discovery/register"
	"github.com/rollcall/rollcall/pkg/discovery/resolve"
	"github.com/rollcall/rollcall/pkg/etcdtest"
)

// storeMethods are the methods of the service calltest.v1.Store and the
// idempotency level its proto gives each.
var storeMethods = []struct {
	name  string
	level descriptorpb.MethodOptions_IdempotencyLevel
}{
	{"Get", descriptorpb.MethodOptions_NO_SIDE_EFFECTS},
	{"Put", descriptorpb.MethodOptions_IDEMPOTENT},
	{"Append", descriptorpb.MethodOptions_IDEMPOTENCY_UNKNOWN},
}

// registerStoreProto adds calltest.v1.Store to the global registry, where
// call.Dial reads which methods are idempotent, as it would from a
// generated .pb.go file.
var registerStoreProto = sync.OnceValue(func() error {
	empty := ".google.protobuf.Empty"
	svc := &descriptorpb.ServiceDescriptorProto{Name: proto.String("Store")}
	for _, m := range storeMethods {
		svc.Method = append(svc.Method, &descriptorpb.MethodDescriptorProto{Name: proto.String(m.name),
			InputType: &empty, OutputType: &empty, Options: &descriptorpb.MethodOptions{IdempotencyLevel: m.level.Enum()}})
	}
	fd, err := protodesc.NewFile(&descriptorpb.FileDescriptorProto{
		Name: proto.String("calltest/v1/store.proto"), Package: proto.String("calltest.v1"), Syntax: proto.String("proto3"),
		Dependency: []string{(&emptypb.Empty{}).ProtoReflect().Descriptor().ParentFile().Path()},
		Service:    []*descriptorpb.ServiceDescriptorProto{svc},
	}, protoregistry.GlobalFiles)
	if err != nil {
		return err
	}
	return protoregistry.GlobalFiles.RegisterFile(fd)
})

// storeBackend serves calltest.v1.Store, answering every method with
// code, and counts the calls it serves per method.
type storeBackend struct {
	code codes.Code
	mu   sync.Mutex
	hits map[string]int
}

func (b *storeBackend) served(method string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.hits[method]
}

// startStore serves and registers a storeBackend as instance id of
// service "store".
func startStore(t *testing.T, srv *etcdtest.Server, id string, code codes.Code) *storeBackend {
	t.Helper()
	b := &storeBackend{code: code, hits: map[string]int{}}
	desc := grpc.ServiceDesc{ServiceName: "calltest.v1.Store", HandlerType: (*any)(nil)}
	for _, m := range storeMethods {
		desc.Methods = append(desc.Methods, grpc.MethodDesc{MethodName: m.name,
			Handler: func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
				if err := dec(&emptypb.Empty{}); err != nil {
					return nil, err
				}
				b.mu.Lock()
				b.hits[m.name]++
				b.mu.Unlock()
				if b.code != codes.OK {
					return nil, status.Error(b.code, id+" fails")
				}
				return &emptypb.Empty{}, nil
			}})
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	s.RegisterService(&desc, nil)
	hs := health.NewServer()
	hs.SetServingStatus("store", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(s, hs)
	done := make(chan struct{})
	go func() { defer close(done); s.Serve(lis) }()
	t.Cleanup(func() { s.Stop(); <-done })
	discoverytest.Register(t, srv.Client(), discovery.Instance{Service: "store", ID: id, Addr: lis.Addr().String()},
		register.WithLogger(slog.New(slog.DiscardHandler)))
	return b
}

// One instance answers UNAVAILABLE to everything, another OK: calls of
// the methods the proto marks idempotent (NO_SIDE_EFFECTS, IDEMPOTENT)
// are sent again to the other instance and all succeed; calls of any
// other method are sent once, and those that reached the failing
// instance fail.
func TestOnlyIdempotentMethodsAreSentAgain(t *testing.T) {
	if err := registerStoreProto(); err != nil {
		t.Fatal(err)
	}
	srv := etcdtest.Start(t)
	down := startStore(t, srv, "down", codes.Unavailable)
	up := startStore(t, srv, "up", codes.OK)
	rb, err := resolve.NewBuilder(srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	// round_robin alternates the two instances; a budget that allows a
	// retry for every call, and no hedge, so that only retries send again.
	conn, err := call.Dial(rb, "store", call.WithPolicy("round_robin"), call.WithoutHedging(), call.WithRetryBudget(1, 100))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	await := time.Now().Add(20 * time.Second)
	for up.served("Get")+down.served("Get") < 4 || up.served("Get") == 0 || down.served("Get") == 0 {
		if time.Now().After(await) {
			t.Fatalf("both instances did not get calls within 20 s: up %d, down %d", up.served("Get"), down.served("Get"))
		}
		invoke(conn, "Get", grpc.WaitForReady(true))
	}

	const calls = 40
	for _, m := range storeMethods {
		t.Run(m.name, func(t *testing.T) {
			idempotent := m.level != descriptorpb.MethodOptions_IDEMPOTENCY_UNKNOWN
			upBefore, downBefore := up.served(m.name), down.served(m.name)
			failed := 0
			for range calls {
				if err := invoke(conn, m.name); err != nil {
					if status.Code(err) != codes.Unavailable {
						t.Fatalf("%s: %v, want OK or UNAVAILABLE", m.name, err)
					}
					failed++
				}
			}
			toUp, toDown := up.served(m.name)-upBefore, down.served(m.name)-downBefore
			switch {
			case idempotent && (failed != 0 || toUp != calls || toDown == 0):
				t.Errorf("%s (%v): %d of %d calls failed, %d served by up, %d tried on down; want none failed, every call served by up after a try on down",
					m.name, m.level, failed, calls, toUp, toDown)
			case !idempotent && (failed == 0 || toUp+toDown != calls || failed != toDown):
				t.Errorf("%s (%v): %d of %d calls failed, %d served by up, %d by down; want each call sent once, those to down failed",
					m.name, m.level, failed, calls, toUp, toDown)
			}
		})
	}
}

func invoke(conn *grpc.ClientConn, method string, opts ...grpc.CallOption) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return conn.Invoke(ctx, fmt.Sprintf("/calltest.v1.Store/%s", method), &emptypb.Empty{}, &emptypb.Empty{}, opts...)
}
