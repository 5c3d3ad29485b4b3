package register_test

import (
	"io"
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
	b.Run("partitioned-past-ttl", benchPartition)
	scenarios := []struct {
		name string
		lose func(*etcdtest.Server)
	}{
		// etcd replaced by an empty one: the lease and key are gone.
		{"wiped", (*etcdtest.Server).Wipe},
	}
	for _, sc := range scenarios {
		b.Run(sc.name, func(b *testing.B) {
			srv := etcdtest.Start(b)
			r, err := register.New(srv.Client(), instance("a", "127.0.0.1:7001"),
				register.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close(b.Context())
			var total time.Duration
			for b.Loop() {
				before := awaitPhase(b, r, register.Registered, 0)
				sc.lose(srv)
				answering := time.Now()
				awaitPhase(b, r, register.Registered, before.Writes+1)
				total += time.Since(answering)
			}
			b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/recovery")
		})
	}
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

// benchPartition cuts the instance off from etcd until its lease expires
// (TTL 2 s), then lets it through again.
func benchPartition(b *testing.B) {
	srv := etcdtest.Start(b)
	observer := srv.Client()
	proxy := etcdtest.NewProxy(b, srv)
	r, err := register.New(proxy.Client(), instance("a", "127.0.0.1:7001"), register.WithTTL(2*time.Second),
		register.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close(b.Context())
	var total time.Duration
	for b.Loop() {
		before := awaitPhase(b, r, register.Registered, 0)
		resp, err := observer.Get(b.Context(), r.Key())
		if err != nil {
			b.Fatal(err)
		}
		proxy.Cut()
		// Wait for etcd to expire the lease and delete the key.
		for ev := range observer.Watch(b.Context(), r.Key(), clientv3.WithRev(resp.Header.Revision+1)) {
			if len(ev.Events) > 0 && ev.Events[0].Type == clientv3.EventTypeDelete {
				break
			}
		}
		proxy.Restore()
		answering := time.Now()
		awaitPhase(b, r, register.Registered, before.Writes+1)
		total += time.Since(answering)
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/recovery")
}
