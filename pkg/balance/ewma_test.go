package balance

import (
	"testing"
	"time"
)

// A new instance starts from the mean estimate of the instances that have
// answered, not from zero (it would win every comparison) and its first
// answer replaces that.
func TestNewInstanceStartsFromItsPeersEstimate(t *testing.T) {
	eps := make([]endpoint, 3)
	for i := range eps {
		st := &addrState{}
		eps[i] = endpoint{weight: 1, state: st, stats: &st.stats}
	}
	eps[0].stats.observe(2 * time.Millisecond)
	eps[1].stats.observe(4 * time.Millisecond)
	seed(eps)
	if got := time.Duration(eps[2].stats.ewmaNs.Load()); got != 3*time.Millisecond {
		t.Errorf("new instance's estimate %v, want its peers' mean 3ms", got)
	}
	eps[2].stats.observe(10 * time.Millisecond)
	if got := time.Duration(eps[2].stats.ewmaNs.Load()); got != 10*time.Millisecond {
		t.Errorf("estimate after the first answer %v, want that answer's 10ms", got)
	}
}
