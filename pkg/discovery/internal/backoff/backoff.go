// Package backoff computes capped exponential delays with full jitter for
// discovery's retry loops, which retry without limit.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Backoff yields delays that start near Base, double on every call up to
// Max, and are jittered so that many instances do not retry in step.
// The zero value is not usable; set Base and Max.
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
