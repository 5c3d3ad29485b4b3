package main

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"
)

// killOne kills -9 greeter-2 and reports when its key leaves etcd.
func killOne(ctx context.Context, s *stack) error {
	victim := s.Process("greeter-2")
	s.Say("kill -9 greeter-2 (pid %d)", victim.PID())
	killed := time.Now()
	victim.Stop(syscall.SIGKILL, time.Second)
	gone, err := s.awaitKeys(ctx, false, "rollcall/greeter/greeter-2")
	if err != nil {
		return err
	}
	s.Say("key rollcall/greeter/greeter-2 left etcd %.1fs after the kill (lease TTL 10s)", gone.Sub(killed).Seconds())
	return nil
}

// scaleUp starts greeter-4 and reports when it answers its first call.
func scaleUp(ctx context.Context, s *stack) error {
	firstCall := s.AwaitLine("client", "greeter-4")
	if _, err := s.startGreeter(); err != nil {
		return err
	}
	s.Say("started greeter-4")
	registered, err := s.awaitKeys(ctx, true, "rollcall/greeter/greeter-4")
	if err != nil {
		return err
	}
	select {
	case line := <-firstCall:
		s.Say("first call answered by greeter-4 %v after its key appeared in etcd", line.At.Sub(registered).Round(time.Millisecond))
	case <-time.After(10 * time.Second):
		return errors.New("greeter-4 answered no call within 10s of registering")
	}
	return nil
}

// rollingReplace replaces each greeter in turn: the new one up and
// registered, then SIGTERM to the old.
func rollingReplace(ctx context.Context, s *stack) error {
	for i := 1; i <= 3; i++ {
		p, err := s.startGreeter()
		if err != nil {
			return err
		}
		if _, err := s.awaitKeys(ctx, true, "rollcall/greeter/"+p.Name); err != nil {
			return err
		}
		s.Say("%s registered; SIGTERM greeter-%d", p.Name, i)
		s.Process(fmt.Sprintf("greeter-%d", i)).Stop(syscall.SIGTERM, 15*time.Second)
	}
	return nil
}

// demo runs three greeters and a fast demo client, applies event after a
// few seconds of calls, lets the client run on, and prints its summary.
func demo(ctx context.Context, event func(context.Context, *stack) error) error {
	s, err := bringUp(ctx, 3, false)
	if err != nil {
		return err
	}
	defer s.stopAll()
	firstCall := s.AwaitLine("client", "call 1:")
	client, err := s.startClient("-rate", "20", "-duration", "14s")
	if err != nil {
		return err
	}
	select {
	case <-firstCall:
	case <-time.After(20 * time.Second):
		return errors.New("the client made no call in 20s")
	}
	time.Sleep(3 * time.Second) // let the spread settle before the event, for the viewer
	if err := event(ctx, s); err != nil {
		return err
	}
	select {
	case <-client.Done():
	case <-ctx.Done():
	}
	return nil
}
