package localstack

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// StopPIDFile stops the processes a stack listed in path, last first, each
// with SIGTERM to its group and SIGKILL after timeout, then removes the
// file. It calls stopped for each process that was still running. A
// missing file is an error that wraps os.ErrNotExist.
func StopPIDFile(path string, timeout time.Duration, stopped func(name string, pid int)) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read PID file: %w", err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if lines[i] == "" {
			continue
		}
		name, pidText, ok := strings.Cut(lines[i], " ")
		pid, err := strconv.Atoi(pidText)
		if !ok || err != nil || pid <= 1 {
			return fmt.Errorf("%s: bad line %q", path, lines[i])
		}
		if stopPID(pid, timeout) && stopped != nil {
			stopped(name, pid)
		}
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("remove PID file: %w", err)
	}
	return nil
}

// stopPID sends SIGTERM to pid's group and waits for pid to exit, then
// SIGKILL after timeout. It reports whether pid was running. The process
// is not this one's child, so there is no exit to wait on: it polls.
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
