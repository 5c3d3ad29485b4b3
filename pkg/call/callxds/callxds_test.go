package callxds_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/rollcall/rollcall/pkg/call/callxds"
	"github.com/rollcall/rollcall/pkg/discovery"
	"github.com/rollcall/rollcall/pkg/discovery/discoverytest"
	"github.com/rollcall/rollcall/pkg/etcdtest"
)

// Dial through a real control plane is tested with it, in services/xds.

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestBootstrapNamesEveryControlPlaneInOrder(t *testing.T) {
	b, err := callxds.Bootstrap("node-1", "10.0.0.1:18000", "10.0.0.2:18000")
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Servers []struct {
			URI      string   `json:"server_uri"`
			Features []string `json:"server_features"`
		} `json:"xds_servers"`
		Node struct{ ID string } `json:"node"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.Node.ID != "node-1" || len(got.Servers) != 2 || got.Servers[0].URI != "10.0.0.1:18000" || got.Servers[1].URI != "10.0.0.2:18000" ||
		!slices.Contains(got.Servers[0].Features, "xds_v3") {
		t.Errorf("bootstrap %s: want node-1 and both servers in order, xds_v3", b)
	}
	for _, bad := range [][]string{nil, {"no-port"}} {
		if _, err := callxds.Bootstrap("n", bad...); err == nil || len(bad) > 0 && !strings.Contains(err.Error(), `"no-port"`) {
			t.Errorf("Bootstrap(%q) = %v, want an error naming the address", bad, err)
		}
	}
}

func TestDialNamesWhatIsMissing(t *testing.T) {
	t.Setenv("GRPC_XDS_BOOTSTRAP", "")
	t.Setenv("GRPC_XDS_BOOTSTRAP_CONFIG", "")
	if _, err := callxds.Dial("greeter"); err == nil || !strings.Contains(err.Error(), "GRPC_XDS_BOOTSTRAP") {
		t.Errorf("Dial without a bootstrap = %v, want an error naming GRPC_XDS_BOOTSTRAP", err)
	}
	if _, err := callxds.Dial("a/b", callxds.WithBootstrap([]byte("{}"))); err == nil || !strings.Contains(err.Error(), `"a/b"`) {
		t.Errorf("Dial(a/b) = %v, want an error naming it", err)
	}
	b, _ := callxds.Bootstrap("n", "127.0.0.1:1")
	cc, err := callxds.Dial("greeter", callxds.WithBootstrap(b))
	if err != nil {
		t.Fatal(err)
	}
	if cc.Target() != "xds:///greeter" {
		t.Errorf("target %q, want xds:///greeter", cc.Target())
	}
	cc.Close()
}

// The control planes registered in etcd make a client's bootstrap.
func TestControlPlanesAreReadFromEtcd(t *testing.T) {
	srv := etcdtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := callxds.ControlPlanes(ctx, srv.Client(), discovery.DefaultNamespace, "xds"); err == nil || !strings.Contains(err.Error(), `"rollcall/xds/"`) {
		t.Errorf("with none registered: %v, want an error naming the prefix", err)
	}
	r := discoverytest.Register(t, srv.Client(), discovery.Instance{Service: "xds", ID: "cp-1", Addr: "127.0.0.1:18000"})
	if err := discoverytest.AwaitRegistered(ctx, r); err != nil {
		t.Fatal(err)
	}
	addrs, err := callxds.ControlPlanes(ctx, srv.Client(), discovery.DefaultNamespace, "xds")
	if err != nil || !slices.Equal(addrs, []string{"127.0.0.1:18000"}) {
		t.Errorf("ControlPlanes = %v, %v; want [127.0.0.1:18000]", addrs, err)
	}
}
