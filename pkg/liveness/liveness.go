// Package liveness is rollcall's heartbeat: how a client tells a server
// process that stopped (SIGSTOP) or is stuck from one that is slow. Such a
// process keeps its TCP connections open and its health status unchanged;
// only a missing heartbeat tells.
//
// The server side (HealthServer, which pkg/serve registers) answers a
// grpc.health.v1 Watch of Service with the server's status every
// Interval. The client side (WatchSubConn, which pkg/balance runs on every
// ready subchannel) watches that stream and calls an instance stalled when
// it sent heartbeats and then none for four intervals, unless the client
// itself was paused.
//
// A liveness probe (Kubernetes') asks Check for Service: it answers
// SERVING for as long as the process answers at all, through the drain
// and graceful stop too.
package liveness

import "time"

const (
	// Service is the health service name on which rollcall servers send a
	// heartbeat every Interval.
	Service = "rollcall.liveness"
	// Interval is the time between two heartbeats.
	Interval = 100 * time.Millisecond
	// stallAfter: an instance that sent heartbeats before and none for
	// this long is stalled and gets no new calls until they resume.
	stallAfter = 4 * Interval
)

// epoch anchors heartbeat ages to the monotonic clock: a step of the wall
// clock (NTP) must not make every instance look stalled.
var epoch = time.Now()

// Now is the time on the clock heartbeat ages are read on (Watch.Stalled):
// the time since a fixed instant of this process, from the monotonic clock
// only.
func Now() time.Duration { return time.Since(epoch) }

// At is t on Now's clock.
func At(t time.Time) time.Duration { return t.Sub(epoch) }
