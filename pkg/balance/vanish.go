package balance

import (
	"log/slog"
	"time"

	"google.golang.org/grpc/resolver"
)

// vanishWindow is how close together instances must leave the resolver's
// list to count as leaving at once: lease expiries of a fleet cut off
// from etcd together come over a third of a TTL (renewals are spread), and
// an instance that leaves while ready is held this long while that is
// decided.
const vanishWindow = 5 * time.Second

// vanished keeps instances that most or all left the resolver's list at
// once while their connections were ready (and their health service said
// SERVING): every key of a fleet that lost its link to etcd expires, while
// every instance still serves. Kept for a grace period, they go on getting
// calls. An instance that really stopped (NOT_SERVING, connection closed)
// is not ready, so it is never kept and leaves at once; one that leaves
// alone while ready (a key deleted by hand) leaves after vanishWindow.
type vanished struct {
	known   map[string]resolver.Endpoint // the resolver's last list, by address
	removed []removal                    // within vanishWindow, oldest first
	kept    map[string]keptEndpoint
	warned  bool // the current episode is logged
}

type removal struct {
	addr string
	at   time.Time
}

type keptEndpoint struct {
	ep    resolver.Endpoint
	until time.Time
	held  bool // for the grace period, not only while deciding
}

// update takes the resolver's new list and returns the endpoints to keep
// beside it; ready tells which addresses have a ready connection now.
func (v *vanished) update(eps []resolver.Endpoint, ready map[string]bool, now time.Time, grace time.Duration, target string) []resolver.Endpoint {
	current := make(map[string]resolver.Endpoint, len(eps))
	for _, ep := range eps {
		if len(ep.Addresses) > 0 {
			current[ep.Addresses[0].Addr] = ep
		}
	}
	if v.kept == nil {
		v.kept = map[string]keptEndpoint{}
	}
	for addr, ep := range v.known {
		if _, ok := current[addr]; ok {
			continue
		}
		v.removed = append(v.removed, removal{addr, now})
		if grace > 0 && ready[addr] {
			v.kept[addr] = keptEndpoint{ep: ep, until: now.Add(vanishWindow)}
		}
	}
	for len(v.removed) > 0 && now.Sub(v.removed[0].at) > vanishWindow {
		v.removed = v.removed[1:]
	}
	// Most or all: more left within the window than remain.
	if len(v.removed) > len(current) {
		for addr, k := range v.kept {
			if !k.held {
				v.kept[addr] = keptEndpoint{ep: k.ep, until: now.Add(grace), held: true}
			}
		}
		if len(v.kept) > 0 && !v.warned {
			v.warned = true
			slog.Default().Warn("most instances left etcd at once while their connections are ready and serving: keeping them for a grace period (etcd unreachable from them, not a scale-down)",
				"target", target, "left", len(v.removed), "remaining", len(current), "kept", len(v.kept), "grace", grace)
		}
	}
	var out []resolver.Endpoint
	for addr, k := range v.kept {
		_, back := current[addr]
		switch {
		case back:
			delete(v.kept, addr)
		case now.After(k.until) || !ready[addr]:
			delete(v.kept, addr)
			if k.held {
				slog.Default().Info("an instance kept after it left etcd is dropped", "target", target, "addr", addr,
					"grace_over", now.After(k.until))
			}
		default:
			out = append(out, k.ep)
		}
	}
	if len(v.kept) == 0 {
		v.warned = false
	}
	v.known = current
	return out
}

// nextExpiry is when the first kept endpoint's grace ends, zero if none.
func (v *vanished) nextExpiry() time.Time {
	var first time.Time
	for _, k := range v.kept {
		if first.IsZero() || k.until.Before(first) {
			first = k.until
		}
	}
	return first
}
