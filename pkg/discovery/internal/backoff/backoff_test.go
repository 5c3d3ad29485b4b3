package backoff

import (
	"testing"
)

// While etcd keeps failing, delays grow to Max and stay there, each
// between half and all of its step, so that retries spread out.
func TestDelaysGrowToMaxAndAreJittered(t *testing.T) {
	b := Default()
	step := b.Base
	for i := range 12 {
		d := b.Next()
		if d < step/2 || d > step {
			t.Fatalf("delay %d = %v, want within [%v, %v]", i, d, step/2, step)
		}
		step = min(2*step, b.Max)
	}
	if step != b.Max {
		t.Fatalf("step after 12 delays = %v, want Max %v", step, b.Max)
	}
	b.Reset()
	if d := b.Next(); d > b.Base {
		t.Errorf("first delay after Reset = %v, want at most Base %v", d, b.Base)
	}
}
