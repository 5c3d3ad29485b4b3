package balance

import (
	"fmt"
	"testing"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/serviceconfig"
)

// readyPicker stands for an instance's pick_first picker, which returns
// its one subchannel.
type readyPicker struct{}

func (readyPicker) Pick(balancer.PickInfo) (balancer.PickResult, error) {
	return balancer.PickResult{}, nil
}

// BenchmarkPick measures one pick and its Done callback for each of
// rollcall's pickers (compare with BenchmarkUnaryCall in pkg/call for the
// whole call, round_robin included).
func BenchmarkPick(b *testing.B) {
	for _, policy := range []struct {
		name string
		new  func([]endpoint, serviceconfig.LoadBalancingConfig) balancer.Picker
	}{{P2CEWMA, newP2CPicker}, {Weighted, newWeightedPicker}} {
		for _, n := range []int{3, 100} {
			b.Run(fmt.Sprintf("%s/instances=%d", policy.name, n), func(b *testing.B) {
				eps := make([]endpoint, n)
				for i := range eps {
					st := &addrState{}
					eps[i] = endpoint{picker: readyPicker{}, weight: uint32(1 + i%3), state: st, stats: &st.stats}
				}
				p := policy.new(eps, nil)
				b.ReportAllocs()
				for b.Loop() {
					res, err := p.Pick(balancer.PickInfo{})
					if err != nil {
						b.Fatal(err)
					}
					res.Done(balancer.DoneInfo{})
				}
			})
		}
	}
}
