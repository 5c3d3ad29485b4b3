package balance

import (
	"testing"
	"time"
)

// A new instance starts from the mean estimate of the instances that have
// answered, not from zero (it would win every comparison), and its
// answers are folded into that: one slow first answer does not put it
// behind its peers, a few do.
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
	eps[2].stats.observe(23 * time.Millisecond)
	if got := time.Duration(eps[2].stats.ewmaNs.Load()); got != 4*time.Millisecond {
		t.Errorf("estimate after a first answer of 23ms %v, want 4ms (3ms + 5%% of the 20ms excess)", got)
	}
	for range 6 {
		eps[2].stats.observe(23 * time.Millisecond)
	}
	if got, peers := time.Duration(eps[2].stats.ewmaNs.Load()), 3*time.Millisecond; got <= defaultSlowFactor*peers {
		t.Errorf("estimate after seven answers of 23ms %v, want more than %v times its peers' %v", got, defaultSlowFactor, peers)
	}
	unseeded := &stats{}
	unseeded.observe(10 * time.Millisecond)
	if got := time.Duration(unseeded.ewmaNs.Load()); got != 10*time.Millisecond {
		t.Errorf("estimate of an instance with no seed after its first answer %v, want that answer's 10ms", got)
	}
}
