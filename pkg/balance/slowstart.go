package balance

import "time"

// Slow start (Traffic.SlowStartWindow): an instance that joins while
// others already serve starts at a tenth of its weight, which rises
// evenly to all of it over the window, so that a cold instance (empty
// caches, a JIT, connection pools to fill) is not flooded with a full
// share of calls it answers slowly. The instances a client finds at its
// start are not slowed, nor those of a fleet starting together (ready
// within slowStartAfter of the first): they are all equally new to it, and
// slowing some would flood the others.

const (
	// rampFloor is the share of its weight a starting instance begins at.
	rampFloor = 0.1
	// rampScale is what every weight is multiplied by while an instance
	// is in slow start, so that a tenth of weight 1 is still a whole
	// number (at most MaxWeight*rampScale, far within uint32).
	rampScale = 1000
	// rampSteps is how many times over the window a starting instance's
	// weight is raised.
	rampSteps = 20
)

// slowStartAfter: an instance that joins is slowed only once another has
// been ready this long. A variable for tests.
var slowStartAfter = time.Second

// noteArrivals marks the addresses of the resolver's list that are new to
// the balancer while another instance is ready: they start slowly once
// ready. Called with lb.mu held.
func (lb *loadAware) noteArrivals(addrs map[string]string) {
	for addr := range lb.listed {
		if _, ok := addrs[addr]; !ok {
			delete(lb.listed, addr) // one that comes back is new again
			delete(lb.arrivals, addr)
		}
	}
	for addr := range addrs {
		if !lb.listed[addr] {
			lb.listed[addr] = true
			if len(lb.ready) > 0 {
				lb.arrivals[addr] = true
			}
		}
	}
}

// becameReady records that the connection to st (at addr) is ready: the
// first time, for an instance that arrived while others served, and since
// long enough, its slow start begins. A connection that comes back (a
// reconnection to the same process) does not start slowly again, and is
// judged afresh for ejection.
func (lb *loadAware) becameReady(addr string, st *addrState, now time.Duration) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	st.restart()
	if !st.everReady {
		st.everReady = true
		if lb.arrivals[addr] && lb.readySince != 0 && now-lb.readySince >= slowStartAfter {
			st.rampFrom.Store(int64(now))
		}
	}
	delete(lb.arrivals, addr)
	if lb.readySince == 0 {
		lb.readySince = now
	}
}

// ramp is the share of its weight st has at now, within (rampFloor, 1],
// and whether it is still starting.
func ramp(st *addrState, now, window time.Duration) (float64, bool) {
	from := time.Duration(st.rampFrom.Load())
	if window <= 0 || from == 0 || now-from >= window {
		return 1, false
	}
	return rampFloor + (1-rampFloor)*float64(now-from)/float64(window), true
}

// rampWeight is a weight in a view where some instance starts: scaled by
// rampScale, times the instance's share.
func rampWeight(weight uint32, share float64) uint32 {
	return max(uint32(float64(weight)*rampScale*share), 1)
}

// rampStep is how often a view with a starting instance is rebuilt.
func rampStep(window time.Duration) time.Duration {
	return max(window/rampSteps, 50*time.Millisecond)
}
