package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// controlSocket is where the supervisor of a running stack takes requests:
// a demo to run on its processes, down, or ping. A request is one line, the
// command; the reply is lines "say TEXT" (its report), then "done" or
// "fail ERROR".
var controlSocket = filepath.Join(runDir, "control.sock")

const (
	replySay  = "say "
	replyDone = "done"
	replyFail = "fail "
)

// errRunning: a supervisor answers on the control socket.
var errRunning = errors.New("a stack is already running (its supervisor answers on " + controlSocket +
	"): the demos act on it, and `go run mage.go down` stops it")

// listenControl listens on the control socket. It fails with errRunning
// when a supervisor answers there, and replaces a socket file left by one
// that was killed.
func listenControl() (net.Listener, error) {
	if err := os.MkdirAll(runDir, 0o755); err != nil {
		return nil, fmt.Errorf("run directory: %w", err)
	}
	ln, err := net.Listen("unix", controlSocket)
	if err == nil {
		return ln, nil
	}
	if conn, dialErr := net.DialTimeout("unix", controlSocket, time.Second); dialErr == nil {
		conn.Close()
		return nil, errRunning
	}
	if err := os.Remove(controlSocket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale control socket: %w", err)
	}
	if ln, err = net.Listen("unix", controlSocket); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return ln, nil
}

// control serves the control socket of a running stack: each demo runs on
// the stack's own processes (new greeters are its children, and stop with
// it), one at a time, its report going both to the stack's output and back
// to the requester.
type control struct {
	ctx       context.Context // ends when the stack stops
	s         *stack
	ln        net.Listener
	stopStack func()
	busy      sync.Mutex // held while a demo runs
	wg        sync.WaitGroup

	mu   sync.Mutex
	down []net.Conn // down requests, answered once the stack has stopped
}

// serveControl takes requests on ln until close.
func serveControl(ctx context.Context, s *stack, ln net.Listener, stopStack func()) *control {
	c := &control{ctx: ctx, s: s, ln: ln, stopStack: stopStack}
	c.wg.Go(c.accept)
	return c
}

func (c *control) accept() {
	for {
		conn, err := c.ln.Accept()
		if err != nil {
			return // closed
		}
		c.wg.Go(func() { c.handle(conn) })
	}
}

func (c *control) handle(conn net.Conn) {
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	conn.SetReadDeadline(time.Time{})
	command := strings.TrimSpace(line)
	if err != nil {
		conn.Close()
		return
	}
	if command == "ping" {
		fmt.Fprintln(conn, replyDone)
		conn.Close()
		return
	}
	if command == "down" {
		fmt.Fprintf(conn, "%sstopping the stack: client, then greeters (deregister, drain), then etcd\n", replySay)
		c.mu.Lock()
		c.down = append(c.down, conn)
		c.mu.Unlock()
		c.stopStack()
		return
	}
	defer conn.Close()
	d, ok := demos[command]
	if !ok {
		fmt.Fprintf(conn, "%sunknown command %q\n", replyFail, command)
		return
	}
	if !c.busy.TryLock() {
		fmt.Fprintf(conn, "%sanother demo is running on this stack: try again when it is done\n", replyFail)
		return
	}
	defer c.busy.Unlock()
	say := func(format string, args ...any) {
		c.s.Say(format, args...)
		fmt.Fprintf(conn, "%s%s\n", replySay, strings.ReplaceAll(fmt.Sprintf(format, args...), "\n", " "))
	}
	c.s.Say("demo %s requested on this stack", command)
	if err := d(c.ctx, c.s, say); err != nil {
		c.s.Say("demo %s failed: %v", command, err)
		fmt.Fprintf(conn, "%s%s\n", replyFail, strings.ReplaceAll(err.Error(), "\n", " "))
		return
	}
	fmt.Fprintln(conn, replyDone)
}

// close stops taking requests and waits for those in progress (their
// context ends with the stack's); finish answers the down requests once
// the stack has stopped.
func (c *control) close() {
	c.ln.Close()
	c.wg.Wait()
}

// finish tells each down request that the stack has stopped.
func (c *control) finish() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, conn := range c.down {
		fmt.Fprintf(conn, "%severy process stopped\n%s\n", replySay, replyDone)
		conn.Close()
	}
	c.down = nil
}

// request sends command to the running stack's supervisor and writes its
// report to out; ran is false when no supervisor answers. Its context
// ending stops the wait, not what the supervisor does.
func request(ctx context.Context, command string, out io.Writer) (ran bool, err error) {
	conn, err := net.DialTimeout("unix", controlSocket, 2*time.Second)
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("control socket: %w", err)
	}
	defer conn.Close()
	defer context.AfterFunc(ctx, func() { conn.Close() })()
	if _, err := fmt.Fprintln(conn, command); err != nil {
		return true, fmt.Errorf("control socket: %w", err)
	}
	sc := bufio.NewScanner(conn)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, replySay):
			fmt.Fprintln(out, "==> "+strings.TrimPrefix(line, replySay))
		case line == replyDone:
			return true, nil
		case strings.HasPrefix(line, replyFail):
			return true, errors.New(strings.TrimPrefix(line, replyFail))
		}
	}
	if ctx.Err() != nil {
		return true, fmt.Errorf("stopped waiting for the stack's supervisor (%w); what it was asked goes on", context.Cause(ctx))
	}
	return true, errors.New("the stack stopped before its supervisor answered")
}
