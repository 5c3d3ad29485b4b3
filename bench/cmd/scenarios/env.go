package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	greeterv1 "github.com/rollcall/rollcall/api/greeter/v1"
	"github.com/rollcall/rollcall/pkg/discovery"
	"github.com/rollcall/rollcall/pkg/localstack"
)

// env is one run's world: etcd, greeter processes of one stack, and a
// client dialed the stack's way.
type env struct {
	st       stack
	dir      string
	procs    *localstack.Stack // every process of the run, logging to dir
	etcd     *localstack.Etcd
	cli      *clientv3.Client // the scenario's own view of etcd
	greeters map[string]*localstack.Process
	order    []string
	zones    map[string]string // each instance's -zone
	zone     string            // the client's
	next     int
	conn     *grpc.ClientConn
	client   greeterv1.GreeterServiceClient
	obs      *observer
	cp       *localstack.Process // the xDS control plane, when the stack has one
	cpAddr   string
	atClose  []func() // stops what a stack started in this process, before the processes
}

// setup starts etcd and the instances and dials them; with countAttempts
// the client counts every attempt it sends (a stats handler, which costs
// each call a little); with zone set, the client is in that zone (for a
// stack that routes by zone) and only the instances in it (-zone) are
// awaited serving a call.
func setup(ctx context.Context, st stack, etcdBin string, etcdSize int, instances [][]string, countAttempts bool, zone string) (*env, error) {
	dir, err := os.MkdirTemp("", "rollcall-bench-")
	if err != nil {
		return nil, err
	}
	e := &env{st: st, dir: dir, greeters: map[string]*localstack.Process{}, zones: map[string]string{}, zone: zone, obs: newObserver()}
	e.obs.countAttempts = countAttempts
	if e.procs, err = localstack.New(localstack.Config{LogDir: dir, KillOnExit: true}); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if e.etcd, err = e.procs.StartEtcd(ctx, localstack.EtcdConfig{Binary: etcdBin, DataDir: filepath.Join(dir, "data"), Members: etcdSize}); err != nil {
		e.close()
		return nil, err
	}
	if e.cli, err = discovery.NewEtcdClient(clientv3.Config{Endpoints: e.etcd.Endpoints(), Logger: zap.NewNop()}); err != nil {
		e.close()
		return nil, err
	}
	var serving []string
	for _, extra := range instances {
		id, err := e.startGreeter(extra...)
		if err != nil {
			e.close()
			return nil, err
		}
		if z := flagValue(extra, "-zone"); zone == "" || z == "" || z == zone {
			serving = append(serving, id)
		}
	}
	if st.dialEnv != nil {
		e.conn, err = st.dialEnv(e)
	} else {
		e.conn, err = st.dial(e.cli, "greeter", e.obs, zone)
	}
	if err != nil {
		e.close()
		return nil, err
	}
	e.conn.Connect()
	e.client = greeterv1.NewGreeterServiceClient(e.conn)
	if st.dialEnv == nil {
		if _, err := e.obs.awaitCount(len(instances), 30*time.Second); err != nil {
			e.close()
			return nil, err
		}
	}
	if err := e.awaitServed(serving...); err != nil {
		e.close() // every process it started, by PID
		return nil, err
	}
	return e, nil
}

// awaitServed calls until every id's server has started a call, as its
// metrics count them: an instance the client's hedges always beat (a slow
// one) has served attempts without ever answering first.
func (e *env) awaitServed(ids ...string) error {
	deadline := time.Now().Add(30 * time.Second)
	for n := 0; ; n++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := e.client.SayHello(ctx, &greeterv1.SayHelloRequest{Name: "warmup"})
		cancel()
		if n%20 != 0 {
			continue
		}
		var missing []string
		for _, id := range ids {
			if started, serr := e.servedBy(id, "started"); serr != nil || started == 0 {
				missing = append(missing, id)
			}
		}
		if len(missing) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("instances %v served no call (last error %v)", missing, err)
		}
	}
}

// flagValue is the value of flag name in args, "" if absent.
func flagValue(args []string, name string) string {
	if i := slices.Index(args, name); i >= 0 && i+1 < len(args) {
		return args[i+1]
	}
	return ""
}

// startGreeter starts the next instance, with extra flags (rollcall only).
func (e *env) startGreeter(extra ...string) (string, error) {
	e.next++
	id := fmt.Sprintf("g%d", e.next)
	args := append(e.st.args(e.etcd.Endpoints(), id), extra...)
	c := localstack.Command{Name: strings.ReplaceAll(e.st.name, "/", "-") + "-" + id, Path: e.st.bin, Args: args}
	if i := slices.Index(args, "-metrics-listen"); i >= 0 {
		c.Metrics = args[i+1]
	}
	p, err := e.procs.Start(c)
	if err != nil {
		return "", err
	}
	e.greeters[id] = p
	e.order = append(e.order, id)
	e.zones[id] = flagValue(extra, "-zone")
	return id, nil
}

// stopGreeter sends sig (SIGTERM or SIGKILL) and waits for the exit,
// killing after 20 s.
func (e *env) stopGreeter(id string, sig syscall.Signal) {
	if p := e.greeters[id]; p != nil {
		p.Stop(sig, 20*time.Second)
		delete(e.greeters, id)
	}
}

// served sums a counter of SayHello calls over the running greeters'
// metrics: "started" (grpc_server_started_total) or a code's handled
// calls ("NotFound": grpc_server_handled_total with that code).
func (e *env) served(what string) (int, error) {
	total := 0
	for _, id := range e.order {
		n, err := e.servedBy(id, what)
		if err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}

// servedBy is served for one greeter; 0 for one that is gone.
func (e *env) servedBy(id, what string) (int, error) {
	pattern := `grpc_server_started_total\{grpc_method="SayHello",[^}]*\} (\d+)`
	if what != "started" {
		pattern = `grpc_server_handled_total\{grpc_code="` + what + `",grpc_method="SayHello",[^}]*\} (\d+)`
	}
	p := e.greeters[id]
	if p == nil || p.Metrics == "" {
		return 0, nil
	}
	resp, err := http.Get("http://" + p.Metrics + "/metrics")
	if err != nil {
		return 0, fmt.Errorf("metrics of %s: %w", id, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return 0, err
	}
	if m := regexp.MustCompile(pattern).FindSubmatch(body); m != nil {
		return strconv.Atoi(string(m[1]))
	}
	return 0, nil
}

func (e *env) key(id string) string { return e.st.prefix("greeter") + id }

// awaitKeys waits until every id has a key under a live lease, returning
// when; it gives up after timeout.
func (e *env) awaitKeys(ctx context.Context, ids []string, timeout time.Duration) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = e.key(id)
	}
	return localstack.AwaitKeys(ctx, e.cli, keys...)
}

// addrOf reads the address id registered.
func (e *env) addrOf(ctx context.Context, id string) (string, error) {
	resp, err := e.cli.Get(ctx, e.key(id))
	if err != nil || len(resp.Kvs) == 0 {
		return "", fmt.Errorf("no key for %s: %v", id, err)
	}
	var rec struct{ Addr string }
	if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
		return "", err
	}
	return rec.Addr, nil
}

func (e *env) close() {
	if e.conn != nil {
		e.conn.Close()
	}
	for _, stop := range e.atClose {
		stop()
	}
	if e.cli != nil {
		e.cli.Close()
	}
	e.procs.Close() // every process it started, by PID
	os.RemoveAll(e.dir)
}
