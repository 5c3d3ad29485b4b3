package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"
)

// A demo acts on a running stack and reports, through say, what it does
// and what it sees, returning once its effect has shown. Each is a command
// of demostack: with `up` running, its supervisor runs the demo on its own
// processes (see control); with none, demostack starts a stack for it. A
// new demo is one more function of this shape, and one more entry in
// demos.
type demo func(ctx context.Context, s *stack, say func(format string, args ...any)) error

var demos = map[string]demo{
	"kill":       killOne,
	"scale":      scaleUp,
	"rolling":    rollingReplace,
	"bad-deploy": badDeploy,
}

// killOne kills -9 the second running greeter (greeter-2 on a fresh
// stack) and reports when its key leaves etcd.
func killOne(ctx context.Context, s *stack, say func(string, ...any)) error {
	running := s.runningGreeters()
	if len(running) == 0 {
		return errors.New("no greeter runs")
	}
	victim := running[min(1, len(running)-1)]
	say("kill -9 %s (pid %d)", victim.Name, victim.PID())
	killed := time.Now()
	if err := victim.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	<-victim.Done()
	gone, err := s.awaitKeys(ctx, false, "rollcall/greeter/"+victim.Name)
	if err != nil {
		return err
	}
	say("key rollcall/greeter/%s left etcd %.1fs after the kill (lease TTL 10s)", victim.Name, gone.Sub(killed).Seconds())
	return nil
}

// scaleUp starts one more greeter and reports when it answers its first
// call.
func scaleUp(ctx context.Context, s *stack, say func(string, ...any)) error {
	p, err := s.startGreeter()
	if err != nil {
		return err
	}
	say("started %s (pid %d)", p.Name, p.PID())
	registered, err := s.awaitKeys(ctx, true, "rollcall/greeter/"+p.Name)
	if err != nil {
		return err
	}
	select {
	case at := <-s.awaitAnswer(p.Name):
		say("first call answered by %s %v after its key appeared in etcd", p.Name, max(at.Sub(registered), 0).Round(time.Millisecond))
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s answered no call within 10s of registering", p.Name)
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	return nil
}

// rollingReplace replaces each running greeter in turn: the new one up and
// registered, then SIGTERM to the old, which deregisters and drains.
func rollingReplace(ctx context.Context, s *stack, say func(string, ...any)) error {
	for _, old := range s.runningGreeters() {
		p, err := s.startGreeter()
		if err != nil {
			return err
		}
		if _, err := s.awaitKeys(ctx, true, "rollcall/greeter/"+p.Name); err != nil {
			return err
		}
		say("%s registered; SIGTERM %s", p.Name, old.Name)
		s.stop(syscall.SIGTERM, 15*time.Second, old)
	}
	return nil
}

// runDemo runs d on the running stack, or on a stack of its own when none
// runs.
func runDemo(ctx context.Context, name string, d demo) error {
	if ran, err := request(ctx, name, os.Stdout); ran || err != nil {
		return err
	}
	fmt.Println("==> no stack running: starting one for this demo (with `go run mage.go up` running, the demos act on its stack)")
	if err := stopWithParent(); err != nil {
		return err
	}
	ctx, stop, out, restore, err := linesOutput(ctx)
	if err != nil {
		return err
	}
	defer restore()
	defer stop(nil)
	return demoOnOwnStack(ctx, out, d)
}

// demoOnOwnStack runs three greeters and a fast demo client, applies d
// after a few seconds of calls, lets the client run on, and prints its
// summary.
func demoOnOwnStack(ctx context.Context, out io.Writer, d demo) error {
	s, err := bringUp(ctx, 3, stackConfig{out: out})
	if err != nil {
		return err
	}
	defer s.stopAll()
	client, err := s.startClient("-rate", "20", "-duration", "14s")
	if err != nil {
		return err
	}
	select {
	case <-s.awaitAnswer("greeter-1"):
	case <-time.After(20 * time.Second):
		return errors.New("the client made no call to greeter-1 in 20s")
	case <-ctx.Done():
		return nil
	}
	select { // let the spread settle before the event, for the viewer
	case <-time.After(3 * time.Second):
	case <-ctx.Done():
		return nil
	}
	if err := d(ctx, s, s.Say); err != nil {
		return err
	}
	select {
	case <-client.Done():
	case <-ctx.Done():
	}
	return nil
}
