package resolve

import (
	"time"

	"github.com/rollcall/rollcall/pkg/discovery"
)

// historyLossGrace is how long instances are kept after etcd came back
// with an older history (wiped, replaced, restored from backup) without
// them: long enough for live instances to register again.
const historyLossGrace = 10 * time.Second

// historyLoss notices that etcd's history went back, and keeps the
// instances known before it while they register again, rather than
// pushing an empty list that fails every call.
type historyLoss struct {
	// rev is the highest etcd revision seen and cluster the cluster that
	// answered.
	rev     int64
	cluster uint64
	// carried holds the instances kept until carryUntil.
	carried    map[string]discovery.Instance
	carryUntil time.Time
}

// answered records the cluster that answered a list at rev: another
// cluster's history is not the one seen, whatever its revision.
func (h *historyLoss) answered(rev int64, cluster uint64) {
	if h.cluster != 0 && cluster != h.cluster {
		h.rev = max(h.rev, rev+1)
	}
	h.cluster = cluster
}

// listed records a complete list at rev; known is what was known before
// it. It reports whether the history went back, and known is carried.
func (h *historyLoss) listed(rev int64, known map[string]discovery.Instance) bool {
	lost := rev < h.rev
	if lost {
		h.carried = known
		h.carryUntil = time.Now().Add(historyLossGrace)
	}
	h.rev = rev
	return lost
}

// watched records a watch response at rev.
func (h *historyLoss) watched(rev int64) { h.rev = max(h.rev, rev) }

// graceTimer returns a timer that fires when the carried instances are
// due to go, or nil when none are carried.
func (h *historyLoss) graceTimer() *time.Timer {
	if len(h.carried) == 0 {
		return nil
	}
	return time.NewTimer(time.Until(h.carryUntil))
}

// endGrace drops the carried instances.
func (h *historyLoss) endGrace() { h.carried = nil }

// appendCarriedKeys appends the keys of carried instances that byKey does
// not hold.
func (h *historyLoss) appendCarriedKeys(keys []string, byKey map[string]discovery.Instance) []string {
	for key := range h.carried {
		if _, ok := byKey[key]; !ok {
			keys = append(keys, key)
		}
	}
	return keys
}
