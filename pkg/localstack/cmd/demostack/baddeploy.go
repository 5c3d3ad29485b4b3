package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"time"
)

// badDeploy starts a greeter that answers INTERNAL to every call, as a bad
// deploy does, and reports how long calls to it fail: rollcall's policies
// eject it after five failures in a row. It counts the failures from the
// instance's own metrics, so it reads the same in the live view and in
// lines.
func badDeploy(ctx context.Context, s *stack, say func(string, ...any)) error {
	name, args, err := s.nextGreeter()
	if err != nil {
		return err
	}
	// GREETER_FAIL_RATE and GREETER_FAIL_CODE are the greeter's -fail-rate
	// and -fail-code.
	env := append([]string{"GREETER_FAIL_RATE=1", "GREETER_FAIL_CODE=INTERNAL"}, s.tls.greeter...)
	p, err := s.start(name, "greeter", args, env, nil)
	if err != nil {
		return err
	}
	say("started %s, a bad deploy: it answers INTERNAL to every call. INTERNAL is not retried, so its calls fail "+
		"until the client's policy ejects it (%s; rollcall's policies eject after five failures in a row)", name, clientPolicy())
	var first, last time.Time
	failed := 0
	tick := time.NewTicker(100 * time.Millisecond) // the metrics give no event: read them often
	defer tick.Stop()
	started := time.Now()
	for {
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-tick.C:
		}
		now := time.Now()
		if n := internalAnswers(p.Metrics); n > failed {
			if failed == 0 {
				first = now
			}
			last, failed = now, n
		}
		switch {
		case failed == 0 && now.Sub(started) > 10*time.Second:
			return fmt.Errorf("%s answered no call within 10s of starting", name)
		case failed > 0 && now.Sub(last) > 3*time.Second:
			say("%d calls failed, over %v from the first to the last; none in the 3 s since: %s is ejected (at a few calls "+
				"a second that takes a moment, since a new instance gets a tenth of its share at first; under load, milliseconds: "+
				"go run mage.go bench:run bad-deploy)", failed, last.Sub(first).Round(100*time.Millisecond), name)
			return nil
		case failed > 0 && now.Sub(first) > 15*time.Second:
			return fmt.Errorf("calls to %s still fail 15 s after the first: the client's policy (%s) does not eject; "+
				"rollcall's do (CLIENT_POLICY=rollcall_p2c_ewma)", name, clientPolicy())
		}
	}
}

var internalLine = regexp.MustCompile(`(?m)^grpc_server_handled_total\{grpc_code="Internal"[^}]*\} (\d+)`)

// internalAnswers is how many calls the greeter whose metrics are at addr
// answered INTERNAL; 0 when they cannot be read yet.
func internalAnswers(addr string) int {
	client := http.Client{Timeout: time.Second}
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	total := 0
	for _, m := range internalLine.FindAllStringSubmatch(string(body), -1) {
		n, _ := strconv.Atoi(m[1])
		total += n
	}
	return total
}
