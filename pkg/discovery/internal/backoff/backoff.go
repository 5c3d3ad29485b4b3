// Package backoff computes capped exponential delays with full jitter for
// discovery's retry loops, which retry without limit.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Discovery's retry timing: the first delay is about Base; delays stop
// growing at Max, so that a fleet does not hammer a struggling etcd at one
// request per instance per second. While etcd is unreachable, its return
// (a reconnect of the client) ends a wait sooner.
const (
	Base = 100 * time.Millisecond
	Max  = 8 * time.Second
)

// Default returns a Backoff from Base to Max.
func Default() Backoff { return Backoff{Base: Base, Max: Max} }

// UpTo returns a Backoff from Base to limit, for a retry that must come
// sooner than Max.
func UpTo(limit time.Duration) Backoff { return Backoff{Base: Base, Max: limit} }

// Backoff yields delays that start near Base, double on every call up to
// Max, and are jittered so that many instances do not retry in step.
// The zero value is not usable: use Default or UpTo.
type Backoff struct {
	Base, Max time.Duration
	attempt   int
}

// Next returns the delay before the next attempt.
func (b *Backoff) Next() time.Duration {
	d := b.Base << min(b.attempt, 30)
	if d <= 0 || d > b.Max {
		d = b.Max
	}
	b.attempt++
	// Half fixed, half random: never zero, never in step.
	return d/2 + rand.N(d/2+1)
}

// Reset makes the next delay start from Base again.
func (b *Backoff) Reset() { b.attempt = 0 }
