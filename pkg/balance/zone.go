package balance

import (
	"math/rand/v2"
	"slices"
	"time"

	"google.golang.org/grpc/resolver"

	"github.com/rollcall/rollcall/pkg/discovery/resolve"
)

// Zone-aware routing (Traffic.Zone), Envoy's rule without the list of
// callers: the client takes the service's callers to be spread evenly over
// its zones, so each zone's fair share of the healthy capacity is one
// over the number of zones. While the client's zone (its instances, and
// those with no zone, which count as every zone's) holds at least that
// share, every call stays in it: cross-zone calls cost money and time.
// When it holds less (fewer instances, or instances stalled, failing,
// ejected, starting or slow), calls stay in it in proportion to what it
// holds, and only the shortfall goes to the other zones, in proportion to
// what each holds beyond its own share. When it holds nothing, every call
// goes to the others. In panic mode zones are ignored.

// zoneRefresh is how often a zoned view is rebuilt to follow the
// instances' latencies.
const zoneRefresh = time.Second

// zoneRoute is how a view splits picks between zones.
type zoneRoute struct {
	stay   float64    // the share of picks that stay in the client's zone
	local  []endpoint // the client's zone's instances, and those with no zone
	remote []zonePool // the other zones', with cumulative shares of the rest
}

type zonePool struct {
	zone string
	eps  []endpoint
	upTo float64 // cumulative share of the picks that leave the zone
}

// isLocal: an instance of zone is in the client's zone, or in every zone.
func isLocal(zone, client string) bool { return zone == "" || client == "" || zone == client }

// draw returns the instances of the zone this pick goes to.
func (z *zoneRoute) draw() []endpoint {
	if z.stay >= 1 {
		return z.local
	}
	r := rand.Float64()
	if r < z.stay {
		return z.local
	}
	r = (r - z.stay) / (1 - z.stay)
	for _, p := range z.remote {
		if r < p.upTo {
			return p.eps
		}
	}
	return z.remote[len(z.remote)-1].eps
}

// routeZones splits eps (the view's instances, weights as picked) between
// the client's zone and the others; nil when no split applies (nothing
// healthy anywhere: the picks take every instance alike). zones is how
// many zones the service has, the client's counted.
func routeZones(eps []endpoint, client string, zones int, now time.Duration, slowFactor float64) *zoneRoute {
	ref := referenceLatency(eps)
	z := &zoneRoute{}
	capacity := map[string]float64{}
	var local, total float64
	for _, ep := range eps {
		c := float64(ep.weight) * health(ep, now, ref, slowFactor)
		total += c
		zone := ep.state.zoneName()
		if isLocal(zone, client) {
			z.local = append(z.local, ep)
			local += c
			continue
		}
		i := slices.IndexFunc(z.remote, func(p zonePool) bool { return p.zone == zone })
		if i < 0 {
			i = len(z.remote)
			z.remote = append(z.remote, zonePool{zone: zone})
		}
		z.remote[i].eps = append(z.remote[i].eps, ep)
		capacity[zone] += c
	}
	if total == 0 {
		return nil
	}
	fair := 1 / float64(max(zones, 2))
	if local/total >= fair || len(z.remote) == 0 {
		z.stay = 1
		return z
	}
	z.stay = local / total / fair
	// The rest goes to the zones with more than their share, in proportion
	// to their excess; if none has (zones without instances), in
	// proportion to their capacity.
	excess := func(zone string) float64 { return max(capacity[zone]/total-fair, 0) }
	sum := 0.0
	for _, p := range z.remote {
		sum += excess(p.zone)
	}
	if sum == 0 {
		excess = func(zone string) float64 { return capacity[zone] / total }
		for _, p := range z.remote {
			sum += excess(p.zone)
		}
	}
	upTo := 0.0
	for i := range z.remote {
		upTo += excess(z.remote[i].zone) / sum
		z.remote[i].upTo = upTo
	}
	return z
}

// zoneSlowMargin is how much slower than the reference an instance must
// also be to lose capacity for its zone: a cross-zone call pays a round
// trip of about a millisecond each way, more under load, so spilling
// calls for a smaller difference saves nothing; and a loaded machine's
// jitter moves latency estimates by that much.
const zoneSlowMargin = 5 * time.Millisecond

// health is the share of its weight an instance serves with: none when
// stalled or failing; for one slower than slowFactor times the reference
// latency (and by zoneSlowMargin), the reference over its own; otherwise
// all of it. Latencies within slowFactor of each other count as equal,
// and a stale estimate's excess counts less (stats.freshness), as in
// rollcall_p2c_ewma's comparison: a zone loaded by its own callers is not
// slow, and an instance p2c holds back is not slow for ever.
func health(ep endpoint, now, ref time.Duration, slowFactor float64) float64 {
	if ep.state.stalledAt(now) || ep.state.out.isFailing.Load() {
		return 0
	}
	if !ep.stats.sampled.Load() || ref <= 0 {
		return 1
	}
	if own := ep.stats.estimateAgainst(ref, now); float64(own) > slowFactor*float64(ref) && own-ref > zoneSlowMargin {
		return float64(ref) / float64(own)
	}
	return 1
}

// referenceLatency is the upper median of the instances' latency
// estimates, of those that answered: 0 if none did.
func referenceLatency(eps []endpoint) time.Duration {
	var lat []time.Duration
	for _, ep := range eps {
		if ep.stats.sampled.Load() {
			lat = append(lat, time.Duration(ep.stats.ewmaNs.Load()))
		}
	}
	if len(lat) == 0 {
		return 0
	}
	slices.Sort(lat)
	return lat[len(lat)/2]
}

// learnZones records the zone of every address in the resolver's list
// (and of the instances kept beside it: zoneOf holds every address), and
// how many zones there are.
// Called with lb.mu held.
func (lb *loadAware) learnZones(eps, kept []resolver.Endpoint) {
	client := lb.traffic.Load().Zone
	clear(lb.zoneOf)
	seen := map[string]bool{}
	if client != "" {
		seen[client] = true
	}
	for _, ep := range slices.Concat(eps, kept) {
		if len(ep.Addresses) == 0 {
			continue
		}
		inst, _ := resolve.InstanceOf(ep) // no zone for an endpoint of another resolver
		lb.zoneOf[ep.Addresses[0].Addr] = inst.Metadata.Zone
		if inst.Metadata.Zone != "" {
			seen[inst.Metadata.Zone] = true
		}
	}
	lb.zones = len(seen)
	for addr, st := range lb.byAddr {
		if zone, ok := lb.zoneOf[addr]; ok {
			st.setZone(zone)
		}
	}
}

// localIndex is 0 for an instance in the client's zone (or in every
// zone), 1 for one in another: the metrics' zone label. Called with lb.mu
// held.
func (lb *loadAware) localIndex(st *addrState) int {
	if isLocal(st.zoneName(), lb.traffic.Load().Zone) {
		return 0
	}
	return 1
}
