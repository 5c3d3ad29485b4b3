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
// every time conn becomes READY again after it was READY and then lost it;
// the first connection is not a reconnect. It returns when ctx ends; its
// caller owns the goroutine that runs it.
func Notify(ctx context.Context, conn Conn, ch chan<- struct{}) {
	state := conn.GetState()
	wasReady := state == connectivity.Ready
	for conn.WaitForStateChange(ctx, state) {
		next := conn.GetState()
		if next == connectivity.Ready && state != connectivity.Ready && wasReady {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
		wasReady = wasReady || next == connectivity.Ready
		state = next
	}
}
