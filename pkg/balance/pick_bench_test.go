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

// pickers are rollcall's pickers, for the tests that run both.
var pickers = []struct {
	name  string
	new   func([]endpoint, serviceconfig.LoadBalancingConfig, *loadAware) balancer.Picker
	parse func([]byte) (serviceconfig.LoadBalancingConfig, error)
}{
	{P2CEWMA, newP2CPicker, func(js []byte) (serviceconfig.LoadBalancingConfig, error) { return parseP2CConfig(js) }},
	{Weighted, newWeightedPicker, func(js []byte) (serviceconfig.LoadBalancingConfig, error) { return parseWeightedConfig(js) }},
}

// testFleet returns n endpoints (weights 1, 2, 3, 1, ...) held by a
// balancer with cfg (JSON of the policy's config), as a running
// balancer's picker sees them; zones, when given, are the instances'
// zones in turn.
func testFleet(tb testing.TB, parse func([]byte) (serviceconfig.LoadBalancingConfig, error), cfg string, n int, zones ...string) ([]endpoint, *loadAware) {
	tb.Helper()
	c, err := parse([]byte(cfg))
	if err != nil {
		tb.Fatal(err)
	}
	lb := &loadAware{cfg: c, byAddr: map[string]*addrState{}, zoneOf: map[string]string{}, ready: map[string]bool{}, target: "test",
		listed: map[string]bool{}, arrivals: map[string]bool{}}
	lb.fleet.lb = lb
	lb.setTraffic(c)
	seen := map[string]bool{}
	if z := lb.traffic.Load().Zone; z != "" {
		seen[z] = true
	}
	eps := make([]endpoint, n)
	for i := range eps {
		addr := fmt.Sprintf("10.0.0.%d:1", i)
		st := &addrState{lb: lb, everReady: true}
		if len(zones) > 0 {
			zone := zones[i%len(zones)]
			st.setZone(zone)
			lb.zoneOf[addr] = zone
			seen[zone] = seen[zone] || zone != ""
		}
		lb.byAddr[addr], lb.ready[addr] = st, true
		eps[i] = endpoint{picker: readyPicker{}, weight: uint32(1 + i%3), idx: int32(i), state: st, stats: &st.stats, fleet: &lb.fleet}
	}
	for z, ok := range seen {
		if !ok {
			delete(seen, z)
		}
	}
	lb.zones = len(seen)
	return eps, lb
}

// BenchmarkPick measures one pick and its Done callback for each of
// rollcall's pickers, in a balancer with the default traffic management
// (slow start, outlier ejection) and every instance healthy: the ordinary
// case, which these must not make dearer. zoned is the same with the
// client in zone a and half the instances in zone b (every call stays in
// a). Compare with BenchmarkUnaryCall in pkg/call for the whole call,
// round_robin included.
func BenchmarkPick(b *testing.B) {
	for _, policy := range pickers {
		for _, tc := range []struct {
			name  string
			cfg   string
			n     int
			zones []string
		}{
			{"instances=3", "{}", 3, nil},
			{"instances=100", "{}", 100, nil},
			{"zoned/instances=6", `{"zone":"a"}`, 6, []string{"a", "b"}},
		} {
			b.Run(policy.name+"/"+tc.name, func(b *testing.B) {
				eps, lb := testFleet(b, policy.parse, tc.cfg, tc.n, tc.zones...)
				p := policy.new(eps, lb.cfg, lb)
				b.ReportAllocs()
				for b.Loop() {
					res, err := p.Pick(balancer.PickInfo{})
					if err != nil {
						b.Fatal(err)
					}
					res.Done(balancer.DoneInfo{BytesReceived: true})
				}
			})
		}
	}
}
