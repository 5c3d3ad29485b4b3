package resolve

import (
	"fmt"
	"log/slog"
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/rollcall/rollcall/pkg/discovery"
)

// BenchmarkUpdate measures what one watch event costs the resolver for a
// service of n instances: decode the value, rebuild the sorted list, and
// build the state gRPC's balancer receives.
func BenchmarkUpdate(b *testing.B) {
	for _, n := range []int{10, 100, 1000, 10000} {
		b.Run(fmt.Sprintf("instances=%d", n), func(b *testing.B) {
			w := &serviceWatch{published: newPublished(snapshot{}), service: "bench", ns: "rollcall", prefix: "rollcall/bench/",
				log: slog.New(slog.DiscardHandler), observer: observers(nil)}
			st := newState()
			for i := range n {
				inst := discovery.Instance{Service: "bench", ID: fmt.Sprintf("i%05d", i), Addr: fmt.Sprintf("10.%d.%d.%d:50051", i>>16, (i>>8)&255, i&255)}
				st.byKey[w.prefix+inst.ID] = inst
			}
			value, err := discovery.Encode(discovery.Instance{Service: "bench", ID: "i00000", Addr: "10.0.0.0:50051", Metadata: discovery.Metadata{Version: "v2"}})
			if err != nil {
				b.Fatal(err)
			}
			kv := &mvccpb.KeyValue{Key: []byte("rollcall/bench/i00000"), Value: value}
			b.ReportAllocs()
			for b.Loop() {
				w.apply(st, kv, false)
				w.publishState(st)
				_ = stateOf(w.snap.instances)
			}
		})
	}
}
