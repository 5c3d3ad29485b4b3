package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/resolver"

	"github.com/rollcall/rollcall/pkg/discovery"
	"github.com/rollcall/rollcall/pkg/discovery/register"
	"github.com/rollcall/rollcall/pkg/discovery/resolve"
	"github.com/rollcall/rollcall/pkg/etcdtest"
	"github.com/rollcall/rollcall/pkg/localstack"
)

// herdSize is the herd scenario's load on etcd: registrations and
// resolvers, each with its own etcd client as in its own process, spread
// over a few worker processes.
type herdSize struct {
	registrations, resolvers, workers int
	ttl, outage                       time.Duration
}

var (
	fullHerd  = herdSize{registrations: 200, resolvers: 50, workers: 4, ttl: register.DefaultTTL, outage: 15 * time.Second}
	smokeHerd = herdSize{registrations: 20, resolvers: 5, workers: 2, ttl: 2 * time.Second, outage: 3 * time.Second}
)

// herdService is the service the herd registers and resolves.
const herdService = "herd"

// runHerd cuts every registration and resolver off from etcd (a TCP proxy
// between them and etcd closes every connection) for longer than the
// lease TTL, so that every key expires while etcd itself stays up, then
// lets them back. It measures the requests etcd serves per second, at
// their peak in the 5 s after the return, and the time until every key is
// written again.
func runHerd(ctx context.Context, bin string, short bool, r *result) error {
	size := fullHerd
	if short {
		size = smokeHerd
	}
	dir, err := os.MkdirTemp("", "rollcall-herd-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	procs, err := localstack.New(localstack.Config{LogDir: dir, KillOnExit: true})
	if err != nil {
		return err
	}
	defer procs.Close()
	etcd, err := procs.StartEtcd(ctx, localstack.EtcdConfig{Binary: filepath.Join(bin, "etcd"), DataDir: filepath.Join(dir, "data")})
	if err != nil {
		return err
	}
	member := etcd.Members()[0].ClientAddr
	proxy, err := etcdtest.ListenProxy(member)
	if err != nil {
		return err
	}
	defer proxy.Close()
	cli, err := discovery.NewEtcdClient(clientv3.Config{Endpoints: etcd.Endpoints(), Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	defer cli.Close()

	self, err := os.Executable()
	if err != nil {
		return err
	}
	per := size.registrations / size.workers
	for w := range size.workers {
		resolvers := size.resolvers / size.workers
		if w < size.resolvers%size.workers {
			resolvers++
		}
		_, err := procs.Start(localstack.Command{Name: fmt.Sprintf("herd-%d", w), Path: self, Args: []string{"-herd-worker",
			"-herd-endpoint", proxy.Endpoint(), "-herd-first", fmt.Sprint(w * per),
			"-herd-registrations", fmt.Sprint(per), "-herd-resolvers", fmt.Sprint(resolvers),
			"-herd-ttl", size.ttl.String()}})
		if err != nil {
			return err
		}
	}
	prefix := discovery.Prefix(discovery.DefaultNamespace, herdService)
	if _, err := awaitKeyCount(ctx, cli, prefix, per*size.workers, 30*time.Second); err != nil {
		return fmt.Errorf("registering the herd: %w", err)
	}

	requests := startRequestCounter(ctx, "http://"+member+"/metrics")
	defer requests.stop()
	time.Sleep(2 * size.ttl) // steady state: renewals and watches only
	steadyFrom := time.Now()
	time.Sleep(size.ttl)
	r.metric("steady_requests_per_second", requests.rate(steadyFrom, time.Now()))
	for method, n := range requests.byMethod(steadyFrom, time.Now()) {
		r.metric("steady_"+method, n)
	}

	proxy.Cut()
	time.Sleep(size.outage)
	left, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return err
	}
	r.metric("keys_left_at_return", float64(left.Count))
	// Watched, not polled: the scenario's own reads would count as load.
	written := watchCreates(ctx, cli, prefix, left.Header.Revision+1)
	proxy.Restore()
	back := time.Now()
	time.Sleep(5*time.Second + 200*time.Millisecond)
	times := written()
	need := per*size.workers - int(left.Count)
	r.metric("reregister_ms", -1) // not within the 5 s watched
	if len(times) >= need && need > 0 {
		r.metric("reregister_ms", ms(times[need-1].Sub(back)))
		r.metric("half_written_ms", ms(times[need/2].Sub(back)))
	}
	peak, total := requests.peak(back, back.Add(5*time.Second))
	r.metric("peak_requests_per_second", peak)
	r.metric("requests_in_5s_after", total)
	r.metric("registrations", float64(per*size.workers))
	r.metric("resolvers", float64(size.resolvers))
	for method, n := range requests.byMethod(back, back.Add(5*time.Second)) {
		r.metric("after_"+method, n)
	}
	return nil
}

// watchCreates records when each key under prefix is created from rev
// on; the function it returns stops the watch and returns the times.
func watchCreates(ctx context.Context, cli *clientv3.Client, prefix string, rev int64) func() []time.Time {
	ctx, cancel := context.WithCancel(ctx)
	events := cli.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(rev))
	done := make(chan []time.Time, 1)
	go func() {
		var times []time.Time
		for resp := range events {
			for _, ev := range resp.Events {
				if ev.IsCreate() {
					times = append(times, time.Now())
				}
			}
		}
		done <- times
	}()
	return func() []time.Time { cancel(); return <-done }
}

// awaitKeyCount polls etcd directly (not through the proxy) until prefix
// holds n keys, returning when it first did.
func awaitKeyCount(ctx context.Context, cli *clientv3.Client, prefix string, n int, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	for {
		resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err == nil && resp.Count == int64(n) {
			return time.Now(), nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("%d keys under %s after %v, want %d (err %v)", count(resp), prefix, timeout, n, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func count(resp *clientv3.GetResponse) int64 {
	if resp == nil {
		return -1
	}
	return resp.Count
}

// requestCounter samples etcd's count of gRPC messages received (every
// unary request, every watch or keepalive request on a stream) every
// 100 ms.
type requestCounter struct {
	cancel  context.CancelFunc
	done    chan struct{}
	samples chan []sample
}

type sample struct {
	at       time.Time
	total    float64
	byMethod map[string]float64
}

func startRequestCounter(ctx context.Context, metricsURL string) *requestCounter {
	ctx, cancel := context.WithCancel(ctx)
	c := &requestCounter{cancel: cancel, done: make(chan struct{}), samples: make(chan []sample, 1)}
	c.samples <- nil
	go func() {
		defer close(c.done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			if total, byMethod, err := scrapeRequests(ctx, metricsURL); err == nil {
				s := <-c.samples
				c.samples <- append(s, sample{time.Now(), total, byMethod})
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return c
}

func (c *requestCounter) stop() { c.cancel(); <-c.done }

func (c *requestCounter) snapshot() []sample {
	s := <-c.samples
	c.samples <- s
	return s
}

// rate is the mean requests per second between from and to.
func (c *requestCounter) rate(from, to time.Time) float64 {
	s := between(c.snapshot(), from, to)
	if len(s) < 2 {
		return 0
	}
	return (s[len(s)-1].total - s[0].total) / s[len(s)-1].at.Sub(s[0].at).Seconds()
}

// peak is the most requests in any 1 s window that starts between from
// and to-1s, and the requests between from and to.
func (c *requestCounter) peak(from, to time.Time) (perSecond, total float64) {
	s := between(c.snapshot(), from.Add(-100*time.Millisecond), to)
	for i := range s {
		for j := i + 1; j < len(s) && s[j].at.Sub(s[i].at) <= time.Second; j++ {
			perSecond = max(perSecond, s[j].total-s[i].total)
		}
	}
	if len(s) > 1 {
		total = s[len(s)-1].total - s[0].total
	}
	return perSecond, total
}

// byMethod is the requests of each gRPC method between from and to.
func (c *requestCounter) byMethod(from, to time.Time) map[string]float64 {
	s := between(c.snapshot(), from.Add(-100*time.Millisecond), to)
	if len(s) < 2 {
		return nil
	}
	out := map[string]float64{}
	for m, n := range s[len(s)-1].byMethod {
		if d := n - s[0].byMethod[m]; d > 0 {
			out[m] = d
		}
	}
	return out
}

func between(s []sample, from, to time.Time) []sample {
	var out []sample
	for _, x := range s {
		if !x.at.Before(from) && !x.at.After(to) {
			out = append(out, x)
		}
	}
	return out
}

// scrapeRequests sums grpc_server_msg_received_total over etcd's
// methods, and returns it per method too.
var methodRE = regexp.MustCompile(`grpc_method="([^"]+)"`)

func scrapeRequests(ctx context.Context, metricsURL string) (float64, map[string]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, metricsURL, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var total float64
	byMethod := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "grpc_server_msg_received_total{") {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			return 0, nil, fmt.Errorf("metrics line %q: %w", line, err)
		}
		total += v
		if m := methodRE.FindStringSubmatch(line); m != nil {
			byMethod[m[1]] += v
		}
	}
	return total, byMethod, sc.Err()
}

// herdWorker is one process of the herd: flags say which registrations
// and how many resolvers it runs. It runs until it is signalled.
type herdWorker struct {
	endpoint                        string
	first, registrations, resolvers int
	ttl                             time.Duration
}

func (h *herdWorker) flags(fs *flag.FlagSet) *bool {
	on := fs.Bool("herd-worker", false, "run as a process of the herd scenario (internal)")
	fs.StringVar(&h.endpoint, "herd-endpoint", "", "etcd endpoint of the herd")
	fs.IntVar(&h.first, "herd-first", 0, "number of the worker's first registration")
	fs.IntVar(&h.registrations, "herd-registrations", 0, "registrations in the worker")
	fs.IntVar(&h.resolvers, "herd-resolvers", 0, "resolvers in the worker")
	fs.DurationVar(&h.ttl, "herd-ttl", register.DefaultTTL, "lease TTL of the registrations")
	return on
}

func (h *herdWorker) run() error {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	newClient := func() (*clientv3.Client, error) {
		return discovery.NewEtcdClient(clientv3.Config{Endpoints: []string{h.endpoint}, Logger: zap.NewNop()})
	}
	var stops []func()
	defer func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}()
	for i := range h.registrations {
		cli, err := newClient()
		if err != nil {
			return err
		}
		stops = append(stops, func() { cli.Close() })
		n := h.first + i
		reg, err := register.New(cli, discovery.Instance{
			Service: herdService, ID: fmt.Sprintf("h%04d", n), Addr: fmt.Sprintf("127.0.0.1:%d", 20000+n),
		}, register.WithTTL(h.ttl), register.WithLogger(quiet))
		if err != nil {
			return err
		}
		stops = append(stops, func() { reg.Close(context.Background()) })
	}
	for range h.resolvers {
		cli, err := newClient()
		if err != nil {
			return err
		}
		stops = append(stops, func() { cli.Close() })
		b, err := resolve.NewBuilder(cli, resolve.WithLogger(quiet))
		if err != nil {
			return err
		}
		res, err := b.Build(resolver.Target{URL: url.URL{Scheme: b.Scheme(), Path: "/" + herdService}}, listSink{}, resolver.BuildOptions{})
		if err != nil {
			return err
		}
		stops = append(stops, res.Close)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	<-ctx.Done() // the scenario ends it by PID
	return nil
}

// listSink takes a resolver's lists and drops them: the herd measures
// etcd's side only.
type listSink struct{ resolver.ClientConn }

func (listSink) UpdateState(resolver.State) error { return nil }
func (listSink) ReportError(error)                {}
