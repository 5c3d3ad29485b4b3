// Package reconnect tells discovery's loops when the etcd client's
// connection becomes ready again after an outage, so that they check their
// lease or re-list at once instead of waiting for their next timer: an etcd
// that came back empty (wiped, replaced) is noticed within a round trip.
package reconnect

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
)

// Conn is the part of *grpc.ClientConn that Notify uses.
type Conn interface {
	GetState() connectivity.State
	WaitForStateChange(ctx context.Context, source connectivity.State) bool
}

var _ Conn = (*grpc.ClientConn)(nil)

// Notify sends on ch (without blocking; ch should have a buffer of one)
// every time conn becomes READY after it was not, the first connection
// included: a loop that started while etcd was down and is waiting out a
// backoff tries again at once. Loops drain ch after a call that succeeded,
// so a connection they already used does not wake them. It returns when
// ctx ends; its caller owns the goroutine that runs it.
func Notify(ctx context.Context, conn Conn, ch chan<- struct{}) {
	state := conn.GetState()
	for conn.WaitForStateChange(ctx, state) {
		next := conn.GetState()
		if next == connectivity.Ready && state != connectivity.Ready {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
		state = next
	}
}

// Start runs Notify for conn on a goroutine until ctx ends. It returns
// the channel Notify sends on, and wait, which returns once that goroutine
// has: call it after ctx ends.
func Start(ctx context.Context, conn Conn) (reconnected <-chan struct{}, wait func()) {
	ch := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		Notify(ctx, conn, ch)
	}()
	return ch, func() { <-done }
}

// Drain empties ch, so that a reconnect a loop has already answered with
// a successful call does not wake it again.
func Drain(ch <-chan struct{}) {
	select {
	case <-ch:
	default:
	}
}
