package main

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// badDeploy starts a greeter that answers INTERNAL to every call, as a bad
// deploy does, and reports how long the client's calls fail: its policy
// (rollcall_p2c_ewma) ejects the instance after five failures in a row.
func badDeploy(ctx context.Context, s *stack) error {
	failed := s.AwaitLine("client", "code = Internal")
	s.greeters++
	name := fmt.Sprintf("greeter-%d", s.greeters)
	// GREETER_FAIL_RATE and GREETER_FAIL_CODE are the greeter's -fail-rate
	// and -fail-code.
	env := append([]string{"GREETER_FAIL_RATE=1", "GREETER_FAIL_CODE=INTERNAL"}, s.tls.greeter...)
	if _, err := s.start(name, "greeter", []string{"-listen", "127.0.0.1:0", "-id", name}, env); err != nil {
		return err
	}
	s.Say("started %s, a bad deploy: it answers INTERNAL to every call. INTERNAL is not retried, so its calls fail until the "+
		"client's policy (rollcall_p2c_ewma) ejects it: five failures in a row, then no call for 30 s (longer each time)", name)
	var first, last time.Time
	n := 0
	for quiet := 10 * time.Second; ; quiet = 3 * time.Second {
		select {
		case line := <-failed:
			if n == 0 {
				first = line.At
			}
			last, n = line.At, n+1
			failed = s.AwaitLine("client", "code = Internal")
			continue
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(quiet):
		}
		break
	}
	if n == 0 {
		return fmt.Errorf("no call failed within 10s of starting %s", name)
	}
	s.Say("%d calls failed, over %v from the first to the last; none in the 3 s since: %s is ejected. At this demo's "+
		"20 calls a second that takes a moment: the new instance gets a tenth of its share at first (slow start); "+
		"under load it takes milliseconds (go run mage.go bench:run bad-deploy)", n, last.Sub(first).Round(time.Millisecond), name)
	if last.Sub(first) > 5*time.Second {
		return errors.New("failures went on for more than 5 s: is the client's policy rollcall's (CLIENT_POLICY)?")
	}
	return nil
}
