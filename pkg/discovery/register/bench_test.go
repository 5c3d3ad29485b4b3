package register_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rollcall/rollcall/pkg/discovery/register"
	"github.com/rollcall/rollcall/pkg/etcdtest"
)

// BenchmarkRecovery measures how long a registration takes to be written
// again once etcd answers after losing it; the target is under 2 s.
// Run with -benchtime=10x: each iteration restarts etcd or waits out a TTL.
func BenchmarkRecovery(b *testing.B) {
	quiet := register.WithLogger(slog.New(slog.DiscardHandler))
	scenarios := []struct {
		name string
		// setup starts a registration and returns how to lose it; the
		// lose function returns once etcd answers again.
		setup func(b *testing.B) (*register.Registration, func())
	}{
		// etcd replaced by an empty one: the lease and key are gone.
		{"wiped", func(b *testing.B) (*register.Registration, func()) {
			srv := etcdtest.Start(b)
			r := start(b, srv.Client(), quiet)
			return r, srv.Wipe
		}},
		// The instance cut off from etcd until its lease (TTL 2 s)
		// expires and etcd deletes the key, then let through again.
		{"partitioned-past-ttl", func(b *testing.B) (*register.Registration, func()) {
			srv := etcdtest.Start(b)
			observer := srv.Client()
			proxy := etcdtest.NewProxy(b, srv)
			r := start(b, proxy.Client(), quiet, register.WithTTL(2*time.Second))
			return r, func() {
				resp, err := observer.Get(b.Context(), r.Key())
				if err != nil {
					b.Fatal(err)
				}
				proxy.Cut()
				for ev := range observer.Watch(b.Context(), r.Key(), clientv3.WithRev(resp.Header.Revision+1)) {
					if len(ev.Events) > 0 && ev.Events[0].Type == clientv3.EventTypeDelete {
						break
					}
				}
				proxy.Restore()
			}
		}},
	}
	for _, sc := range scenarios {
		b.Run(sc.name, func(b *testing.B) {
			r, lose := sc.setup(b)
			var total time.Duration
			for b.Loop() {
				before := awaitPhase(b, r, register.Registered, 0)
				lose()
				answering := time.Now()
				awaitPhase(b, r, register.Registered, before.Writes+1)
				total += time.Since(answering)
			}
			b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/recovery")
		})
	}
}

func start(b *testing.B, c *clientv3.Client, opts ...register.Option) *register.Registration {
	r, err := register.New(c, instance("a", "127.0.0.1:7001"), opts...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { r.Close(context.Background()) })
	return r
}

func awaitPhase(b *testing.B, r *register.Registration, p register.Phase, minWrites int) register.State {
	timeout := time.After(30 * time.Second)
	for {
		s, changed := r.Watch()
		if s.Phase == p && s.Writes >= minWrites {
			return s
		}
		select {
		case <-changed:
		case <-timeout:
			b.Fatalf("never reached %v with %d writes; last %+v", p, minWrites, s)
		}
	}
}
