// Package caller calls the greeter, per call, and records which instance
// answered: slowly with every answer shown (demo), or from many workers
// in a closed loop (load).
package caller

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/google/wire"
	"google.golang.org/grpc/status"

	greeterv1 "github.com/rollcall/rollcall/api/greeter/v1"
	"github.com/rollcall/rollcall/pkg/logs"
	"github.com/rollcall/rollcall/services/client/internal/config"
	"github.com/rollcall/rollcall/services/client/internal/instances"
	"github.com/rollcall/rollcall/services/client/internal/stats"
	"github.com/rollcall/rollcall/services/client/internal/view"
)

// ProviderSet is the caller's providers.
var ProviderSet = wire.NewSet(New, stats.NewRecorder, instances.New)

// Caller runs the configured mode.
type Caller struct {
	cfg       config.Calls
	greeter   greeterv1.GreeterServiceClient
	rec       *stats.Recorder
	instances *instances.Tracker
	out       io.Writer

	mu     sync.Mutex
	recent []string // last answers, for the table view
}

// New returns a Caller writing its view to standard output; the json view
// reads the instances tracker.
func New(cfg config.Calls, greeter greeterv1.GreeterServiceClient, rec *stats.Recorder, tracker *instances.Tracker) *Caller {
	return &Caller{cfg: cfg, greeter: greeter, rec: rec, instances: tracker, out: os.Stdout}
}

// Run calls until ctx ends or the configured duration passes, then prints
// the summary: a table, and in load mode a JSON line too.
func (c *Caller) Run(ctx context.Context) error {
	if c.cfg.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.Duration)
		defer cancel()
	}
	mode := c.cfg.View
	if mode == "auto" {
		mode = "lines"
		if logs.IsTerminal(c.out) {
			mode = "table"
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() { c.show(ctx, mode) })
	if mode == "json" {
		wg.Go(func() { c.instances.Watch(ctx) })
	}
	if c.cfg.Mode == config.ModeLoad {
		c.load(ctx)
	} else {
		c.demo(ctx, mode == "lines")
	}
	wg.Wait()

	s := c.rec.Summary()
	fmt.Fprintln(c.out, "summary:")
	view.Table(c.out, s)
	if c.cfg.Mode == config.ModeLoad {
		return json.NewEncoder(c.out).Encode(s)
	}
	return nil
}

// once makes one call and records it; it returns the answer or error text.
func (c *Caller) once(parent context.Context) string {
	ctx, cancel := context.WithTimeout(parent, c.cfg.Timeout)
	defer cancel()
	start := time.Now()
	resp, err := c.greeter.SayHello(ctx, &greeterv1.SayHelloRequest{Name: c.cfg.Name})
	latency := time.Since(start)
	if err != nil && ended(parent) {
		return "stopped" // the run ended mid-call: not the service's failure
	}
	if err != nil {
		c.rec.Record("", status.Code(err).String(), latency)
		return fmt.Sprintf("error after %v: %v", latency.Round(time.Microsecond), err)
	}
	c.rec.Record(resp.GetInstanceId(), "OK", latency)
	return fmt.Sprintf("%s  (%v)", resp.GetMessage(), latency.Round(time.Microsecond))
}

// ended reports whether ctx is done or past its deadline. A context's
// timer fires a little after its deadline; gRPC fails calls with
// DeadlineExceeded from the deadline on, and those are the end of the
// run, not failures of the service.
func ended(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	d, ok := ctx.Deadline()
	return ok && !time.Now().Before(d)
}

func (c *Caller) demo(ctx context.Context, printEach bool) {
	tick := time.NewTicker(time.Duration(float64(time.Second) / c.cfg.Rate))
	defer tick.Stop()
	for n := 1; ; n++ {
		answer := c.once(ctx)
		if ended(ctx) {
			return
		}
		line := fmt.Sprintf("call %d: %s", n, answer)
		if printEach {
			fmt.Fprintln(c.out, line)
		}
		c.mu.Lock()
		c.recent = append(c.recent, line)
		if len(c.recent) > 6 {
			c.recent = c.recent[1:]
		}
		c.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (c *Caller) load(ctx context.Context) {
	var wg sync.WaitGroup
	for range c.cfg.Concurrency {
		wg.Go(func() {
			for !ended(ctx) {
				c.once(ctx)
			}
		})
	}
	wg.Wait()
}

// The json view writes a snapshot every jsonInterval, with rates and
// percentiles over the last jsonWindow: short enough to show a change
// within a second or two, long enough to hold several calls per instance
// at the demo's rates.
const (
	jsonInterval = 500 * time.Millisecond
	jsonWindow   = 5 * time.Second
)

// show refreshes the view about once a second (json: every jsonInterval)
// until ctx ends.
func (c *Caller) show(ctx context.Context, mode string) {
	if mode == "none" {
		return
	}
	interval := time.Second
	if mode == "json" {
		interval = jsonInterval
	}
	live := view.NewLive(c.out)
	marks := []stats.Mark{c.rec.Mark()} // oldest first, spanning jsonWindow
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		s := c.rec.Summary()
		switch mode {
		case "json":
			listed, events := c.instances.Take()
			view.JSON(c.out, view.NewSnapshot(s, c.rec.Since(marks[0]), listed, events))
			if marks = append(marks, c.rec.Mark()); len(marks) > int(jsonWindow/jsonInterval) {
				marks = marks[1:]
			}
		case "table":
			c.mu.Lock()
			recent := append([]string(nil), c.recent...)
			c.mu.Unlock()
			live.Draw(s, recent)
		default:
			view.Line(c.out, s)
		}
	}
}
