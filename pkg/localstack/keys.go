package localstack

import (
	"context"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// AwaitKeys waits until every key is in etcd under a lease, as
// registrations are, and returns when it saw them all. ctx bounds the wait.
func AwaitKeys(ctx context.Context, cli *clientv3.Client, keys ...string) (time.Time, error) {
	return awaitKeys(ctx, cli, keys, true)
}

// AwaitKeysGone waits until none of keys is in etcd, and returns when.
func AwaitKeysGone(ctx context.Context, cli *clientv3.Client, keys ...string) (time.Time, error) {
	return awaitKeys(ctx, cli, keys, false)
}

// awaitKeys lists the keys' common prefix, then follows its watch from
// the listed revision until the keys are as wanted; it lists again when
// the watch ends (etcd restarted, history compacted).
func awaitKeys(ctx context.Context, cli *clientv3.Client, keys []string, present bool) (time.Time, error) {
	if len(keys) == 0 {
		return time.Now(), nil
	}
	prefix := commonPrefix(keys)
	leased := map[string]bool{} // key -> under a lease; absent: not in etcd
	done := func() bool {
		for _, k := range keys {
			isLeased, inEtcd := leased[k]
			if present && !isLeased || !present && inEtcd {
				return false
			}
		}
		return true
	}
	for {
		clear(leased)
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		// Not WithKeysOnly: its answer carries no lease IDs.
		resp, err := cli.Get(rctx, prefix, clientv3.WithPrefix())
		cancel()
		if err == nil {
			for _, kv := range resp.Kvs {
				leased[string(kv.Key)] = kv.Lease != 0
			}
			if done() {
				return time.Now(), nil
			}
			wctx, wcancel := context.WithCancel(ctx)
			for wr := range cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1)) {
				if wr.Err() != nil {
					break
				}
				for _, ev := range wr.Events {
					if ev.Type == clientv3.EventTypeDelete {
						delete(leased, string(ev.Kv.Key))
					} else {
						leased[string(ev.Kv.Key)] = ev.Kv.Lease != 0
					}
				}
				if done() {
					wcancel()
					return time.Now(), nil
				}
			}
			wcancel()
		}
		if ctx.Err() != nil {
			want := "present"
			if !present {
				want = "gone"
			}
			return time.Time{}, fmt.Errorf("etcd keys %s not all %s: %w", strings.Join(keys, ", "), want, ctx.Err())
		}
	}
}

func commonPrefix(keys []string) string {
	p := keys[0]
	for _, k := range keys[1:] {
		for !strings.HasPrefix(k, p) {
			p = p[:len(p)-1]
		}
	}
	return p
}
