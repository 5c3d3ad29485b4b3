package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/magefile/mage/mg"
)

// Up starts etcd, greeter instances (GREETERS, default 3) and the client demo; Ctrl-C stops them all.
//
// ETCD_ENDPOINTS set: use that etcd instead of starting one (ETCD_USERNAME,
// ETCD_PASSWORD, ETCD_CACERT... pass through to every process). TLS=1:
// mutual TLS between client and greeters, with throwaway certificates.
// DETACH=1: run in the background with logs in .run/logs; `down` stops it.
func Up(ctx context.Context) error {
	n, err := envInt("GREETERS", 3)
	if err != nil {
		return err
	}
	s, err := bringUp(ctx, n, os.Getenv("DETACH") != "")
	if err != nil {
		return err
	}
	client, err := s.startClient()
	if err != nil {
		s.stopAll()
		return err
	}
	s.say("%s", s.metricsSummary())
	if s.detached {
		fmt.Printf("running in the background; logs in %s; stop with: go run mage.go down\n", filepath.Join(runDir, "logs"))
		return nil
	}
	defer s.stopAll()
	select {
	case <-ctx.Done():
		s.say("stopping: client, then greeters (deregister, drain), then etcd")
	case <-client.done:
	}
	return nil
}

// Down stops what a detached up left running, by the PIDs it recorded; data in .run stays.
func Down() error {
	data, err := os.ReadFile(filepath.Join(runDir, "pids"))
	if errors.Is(err, os.ErrNotExist) {
		fmt.Println("nothing to stop: no", filepath.Join(runDir, "pids"))
		return nil
	}
	if err != nil {
		return err
	}
	// The file lists etcd first; stop in reverse so etcd goes last.
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		name, pidText, ok := strings.Cut(lines[i], " ")
		pid, err := strconv.Atoi(pidText)
		if !ok || err != nil || pid <= 1 {
			return fmt.Errorf("%s: bad line %q", filepath.Join(runDir, "pids"), lines[i])
		}
		if stopPID(pid, 15*time.Second) {
			fmt.Printf("stopped %s (pid %d)\n", name, pid)
		}
	}
	return os.Remove(filepath.Join(runDir, "pids"))
}

// stopPID sends SIGTERM to pid's process group and waits for it to exit,
// then SIGKILL after timeout. It reports whether the process was running.
func stopPID(pid int, timeout time.Duration) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	syscall.Kill(-pid, syscall.SIGTERM)
	deadline := time.Now().Add(timeout)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			syscall.Kill(-pid, syscall.SIGKILL)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

// bringUp builds the binaries and starts etcd (unless ETCD_ENDPOINTS names
// one) and n greeters.
func bringUp(ctx context.Context, n int, detached bool) (*stack, error) {
	if data, err := os.ReadFile(filepath.Join(runDir, "pids")); err == nil && len(data) > 0 {
		return nil, fmt.Errorf("a stack is already running (see %s): stop it with `go run mage.go down`", filepath.Join(runDir, "pids"))
	}
	if err := buildBinaries(); err != nil {
		return nil, err
	}
	s, err := newStack(detached)
	if err != nil {
		return nil, err
	}
	if ep := os.Getenv("ETCD_ENDPOINTS"); ep != "" {
		first, _, _ := strings.Cut(ep, ",")
		s.etcd = strings.TrimPrefix(strings.TrimPrefix(first, "http://"), "https://")
		s.say("using etcd at %s (ETCD_ENDPOINTS)", s.etcd)
	} else if err := s.startEtcd(ctx); err != nil {
		s.stopAll()
		return nil, err
	} else {
		s.say("etcd serving on %s, data in %s", s.etcd, filepath.Join(runDir, "etcd"))
	}
	if os.Getenv("TLS") != "" {
		if err := s.makeCerts(); err != nil {
			s.stopAll()
			return nil, err
		}
	}
	var greeters []*proc
	for range n {
		p, err := s.startGreeter()
		if err != nil {
			s.stopAll()
			return nil, err
		}
		greeters = append(greeters, p)
	}
	// The client starts once every greeter is in etcd, so that its first
	// call is answered rather than told no instance is registered.
	for _, p := range greeters {
		if _, err := s.awaitKey(ctx, "rollcall/greeter/"+p.name, true, 30*time.Second); err != nil {
			s.stopAll()
			return nil, err
		}
	}
	return s, nil
}

// Demo shows what discovery does when instances come and go, one command each.
type Demo mg.Namespace

// Kill kills -9 one greeter mid-demo: calls go on with no error, and its key leaves etcd within the TTL.
func (Demo) Kill(ctx context.Context) error {
	return demo(ctx, func(s *stack) error {
		victim := s.greeterProc("greeter-2")
		s.say("kill -9 greeter-2 (pid %d)", victim.cmd.Process.Pid)
		killed := time.Now()
		s.stop(victim, syscall.SIGKILL, time.Second)
		gone, err := s.awaitKey(ctx, "rollcall/greeter/greeter-2", false, 30*time.Second)
		if err != nil {
			return err
		}
		s.say("key rollcall/greeter/greeter-2 left etcd %.1fs after the kill (lease TTL 10s)", gone.Sub(killed).Seconds())
		return nil
	})
}

// Scale starts a fourth greeter: it gets its share of calls within a second of registering.
func (Demo) Scale(ctx context.Context) error {
	return demo(ctx, func(s *stack) error {
		firstCall := s.firstLineWith("client", "greeter-4")
		if _, err := s.startGreeter(); err != nil {
			return err
		}
		s.say("started greeter-4")
		registered, err := s.awaitKey(ctx, "rollcall/greeter/greeter-4", true, 30*time.Second)
		if err != nil {
			return err
		}
		select {
		case at := <-firstCall:
			s.say("first call answered by greeter-4 %v after its key appeared in etcd", at.Sub(registered).Round(time.Millisecond))
		case <-time.After(10 * time.Second):
			return errors.New("greeter-4 answered no call within 10s of registering")
		}
		return nil
	})
}

// Rolling replaces every greeter in turn (start the new one, then SIGTERM the old): no call fails.
func (Demo) Rolling(ctx context.Context) error {
	return demo(ctx, func(s *stack) error {
		for i := 1; i <= 3; i++ {
			p, err := s.startGreeter()
			if err != nil {
				return err
			}
			if _, err := s.awaitKey(ctx, "rollcall/greeter/"+p.name, true, 30*time.Second); err != nil {
				return err
			}
			old := s.greeterProc(fmt.Sprintf("greeter-%d", i))
			s.say("%s registered; SIGTERM greeter-%d", p.name, i)
			s.stop(old, syscall.SIGTERM, 15*time.Second)
		}
		return nil
	})
}

// demo runs three greeters and a fast demo client, applies event after a
// few seconds of calls, lets the client run on, and prints its summary.
func demo(ctx context.Context, event func(*stack) error) error {
	s, err := bringUp(ctx, 3, false)
	if err != nil {
		return err
	}
	defer s.stopAll()
	lines := s.firstLineWith("client", "call 1:")
	client, err := s.startClient("-rate", "20", "-duration", "14s")
	if err != nil {
		return err
	}
	select {
	case <-lines:
	case <-time.After(20 * time.Second):
		return errors.New("the client made no call in 20s")
	}
	time.Sleep(3 * time.Second) // let the spread settle before the event, for the viewer
	if err := event(s); err != nil {
		return err
	}
	select {
	case <-client.done:
	case <-ctx.Done():
	}
	return nil
}

// greeterProc returns the running process called name.
func (s *stack) greeterProc(name string) *proc {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.procs {
		if p.name == name {
			return p
		}
	}
	return nil
}

// firstLineWith returns a channel that receives the time of the first line
// from process name that contains text.
func (s *stack) firstLineWith(name, text string) <-chan time.Time {
	ch := make(chan time.Time, 1)
	var once sync.Once
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := s.onLine
	s.onLine = func(n, line string) {
		if prev != nil {
			prev(n, line)
		}
		if n == name && strings.Contains(line, text) {
			once.Do(func() { ch <- time.Now() })
		}
	}
	return ch
}
