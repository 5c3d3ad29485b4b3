package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/rollcall/rollcall/pkg/discovery"
	"github.com/rollcall/rollcall/pkg/discovery/resolve"
	"github.com/rollcall/rollcall/pkg/localstack"
)

// modelStacks are the three models of the design, compared by the models
// scenarios: a balancing-aware client, a lookaside control plane, a proxy.
var modelStacks = []string{"rollcall", "xds", "nginx"}

func threeModels(bin string) []stack {
	return []stack{rollcallStack(bin+"/greeter", ""), xdsStack(bin), nginxStack(bin)}
}

// nginxStack is the proxy model: the client has one connection, to nginx
// (Debian's package), whose upstream a watcher renders from etcd (the
// resolver's watch, resolve.Builder.Follow) and reloads nginx with at each
// change. nginx tries another upstream when a connection fails, never a
// call already sent (gRPC calls are POSTs).
func nginxStack(bin string) stack {
	st := rollcallStack(bin+"/greeter", "")
	st.name = "nginx"
	st.dial = nil
	st.dialEnv = func(e *env) (*grpc.ClientConn, error) {
		addr, err := e.startNginx()
		if err != nil {
			return nil, err
		}
		return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithNoProxy())
	}
	return st
}

// nginxPath finds Debian's nginx, installing it with apt when it can.
func nginxPath() (string, error) {
	const debian = "/usr/sbin/nginx"
	if path, err := exec.LookPath("nginx"); err == nil {
		return path, nil
	}
	if _, err := os.Stat(debian); err == nil {
		return debian, nil
	}
	if err := localstack.InstallDebian("nginx"); err != nil {
		return "", fmt.Errorf("skipped: no nginx binary: %w", err)
	}
	return debian, nil
}

// startNginx renders the upstream from etcd, starts nginx, and keeps the
// upstream current until the run ends.
func (e *env) startNginx() (string, error) {
	nginx, err := nginxPath()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(e.dir, "nginx")
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o755); err != nil {
		return "", err
	}
	addr := freeAddr()
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;" // workers read the upstream this process writes
	}
	conf := fmt.Sprintf(`%s
daemon off;
master_process on;
worker_processes 1;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path %[2]s/tmp;
    upstream greeter {
        include %[2]s/upstream.conf;
        keepalive 64;
    }
    server {
        listen %[3]s http2;
        location / {
            grpc_pass grpc://greeter;
            grpc_next_upstream error timeout;
            grpc_connect_timeout 1s;
        }
    }
}
`, user, dir, addr)
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o644); err != nil {
		return "", err
	}
	rb, err := resolve.NewBuilder(e.cli)
	if err != nil {
		return "", err
	}
	// mu orders a render with nginx's start. nginx reads the file
	// rendered before it started, and is reloaded (SIGHUP to its master)
	// for any after, but only once it listens: before it has set its
	// handlers, a SIGHUP ends it.
	var mu sync.Mutex
	var proc *localstack.Process
	listening, stale := false, false
	listed := make(chan struct{})
	render := func(list []discovery.Instance) {
		mu.Lock()
		defer mu.Unlock()
		var b strings.Builder
		for _, inst := range list {
			fmt.Fprintf(&b, "server %s max_fails=0;\n", inst.Addr)
		}
		if len(list) == 0 {
			b.WriteString("server 127.0.0.1:1 down;\n") // nginx refuses an empty upstream
		}
		path := filepath.Join(dir, "upstream.conf")
		if err := os.WriteFile(path+".tmp", []byte(b.String()), 0o644); err == nil {
			os.Rename(path+".tmp", path)
		}
		select {
		case <-listed:
		default:
			close(listed)
		}
		switch {
		case listening:
			syscall.Kill(proc.PID(), syscall.SIGHUP) // the master alone: it reloads
		case proc != nil:
			stale = true
		}
	}
	stop, err := rb.Follow("greeter", render)
	if err != nil {
		return "", err
	}
	e.atClose = append(e.atClose, stop)
	<-listed // rendered once: nginx can start
	mu.Lock()
	proc, err = e.procs.Start(localstack.Command{Name: "nginx", Path: nginx,
		Args: []string{"-p", dir, "-c", filepath.Join(dir, "nginx.conf"), "-e", filepath.Join(dir, "error.log")}})
	mu.Unlock()
	if err != nil {
		return "", err
	}
	if err := awaitListening(addr, proc, 10*time.Second); err != nil {
		return "", fmt.Errorf("nginx (log %s): %w", filepath.Join(dir, "error.log"), err)
	}
	mu.Lock()
	listening = true
	if stale {
		syscall.Kill(proc.PID(), syscall.SIGHUP)
	}
	mu.Unlock()
	return addr, nil
}

// awaitListening returns once addr accepts a connection, or an error if
// proc exits first or within d it does not.
func awaitListening(addr string, proc *localstack.Process, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			return conn.Close()
		}
		select {
		case <-proc.Done():
			return fmt.Errorf("exited before listening on %s", addr)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not listening on %s after %v: %w", addr, d, err)
		}
	}
}

// runSteady runs the load with no event: calls per second, p50 and p99,
// and the CPU every process of the run used (etcd, greeters, control
// plane or proxy, and this client) per 1,000 calls.
func runSteady(ctx context.Context, e *env, t timing, r *result) error {
	l := startLoad(e.client, 32, time.Second)
	time.Sleep(t.warm)
	cpu0, self0 := groupsCPU(e.procs.Processes()), cpuTime()
	calls0 := l.rec.snapshot().calls
	time.Sleep(t.after)
	cpu1, self1 := groupsCPU(e.procs.Processes()), cpuTime()
	calls1 := l.rec.snapshot().calls
	r.fill(l.rec, l.stop())
	r.metric("p50_ms", ms(l.rec.quantile(0.5)))
	r.metric("cpu_ms_per_1000_calls", ms(cpu1-cpu0+self1-self0)*1000/float64(max(calls1-calls0, 1)))
	return nil
}

// quantile is the latency at q of every call recorded.
func (r *recorder) quantile(q float64) time.Duration {
	r.mu.Lock()
	lat := slices.Clone(r.latencies)
	r.mu.Unlock()
	if len(lat) == 0 {
		return 0
	}
	slices.Sort(lat)
	return lat[int(q*float64(len(lat)-1))]
}

// groupsCPU sums the CPU time of every process in the process groups of
// procs (each is its own group's leader), the children they reaped
// included: nginx's workers are its master's children.
func groupsCPU(procs []*localstack.Process) time.Duration {
	groups := map[int]bool{}
	for _, p := range procs {
		groups[p.PID()] = true
	}
	entries, _ := os.ReadDir("/proc")
	var ticks int64
	for _, ent := range entries {
		if _, err := strconv.Atoi(ent.Name()); err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "stat"))
		if err != nil {
			continue
		}
		// Fields after the command, which is in parentheses and may hold spaces.
		f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+2:]))
		if len(f) < 15 {
			continue
		}
		if pgrp, _ := strconv.Atoi(f[2]); !groups[pgrp] {
			continue
		}
		for _, i := range []int{11, 12, 13, 14} { // utime, stime, cutime, cstime
			n, _ := strconv.ParseInt(f[i], 10, 64)
			ticks += n
		}
	}
	return time.Duration(ticks) * time.Second / 100 // USER_HZ is 100 on Linux
}

// modelsScenarios run the same load and events through each model.
var modelsScenarios = []scenario{
	{
		name: "models-steady", stacks: threeModels, group: groupModels, run: runSteady,
		event:  "no event: the load for 5 s after 2 s of warm-up",
		figure: "calls per second, p50 and p99; CPU of every process of the run (etcd, greeters, control plane or proxy, client) per 1,000 calls",
		target: target{text: "figures", check: func(r result) (string, bool) {
			return fmt.Sprintf("%.0f/s, p50 %.2f ms, p99 %.2f ms, CPU %.0f ms/1000 calls", r.CallsPerSec, r.Metrics["p50_ms"], r.P99Ms,
				r.Metrics["cpu_ms_per_1000_calls"]), r.Error == ""
		}},
	},
	{
		name: "models-kill", stacks: threeModels, group: groupModels, run: stopOne(syscall.SIGKILL),
		event: "`kill -9` of one of 3 instances", figure: "failed calls", target: figuresFailed,
	},
	{
		name: "models-term", stacks: threeModels, group: groupModels, run: stopOne(syscall.SIGTERM),
		event: "SIGTERM of one of 3 instances", figure: "failed calls", target: figuresFailed,
	},
	{
		name: "models-scale-up", stacks: threeModels, group: groupModels, run: runScaleUp,
		event:  "a fourth instance starts, 20 times",
		figure: "time from its key's PUT event in etcd to the first call it serves (p50, p99)",
		target: target{text: "figures", check: func(r result) (string, bool) {
			return fmt.Sprintf("p50 %.1f ms, p99 %.1f ms", r.Metrics["first_call_p50_ms"], r.Metrics["first_call_p99_ms"]), r.Error == ""
		}},
	},
}

var figuresFailed = target{text: "figures", check: func(r result) (string, bool) {
	f, _ := failedCalls(r)
	return f, r.Error == ""
}}
