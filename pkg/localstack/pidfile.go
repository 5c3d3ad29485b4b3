package localstack

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// pidEntry is one line of a PID file.
type pidEntry struct {
	name string
	pid  int
}

// readPIDFile parses a PID file's "NAME PID" lines, in order.
func readPIDFile(path string) ([]pidEntry, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read PID file: %w", err)
	}
	var entries []pidEntry
	for line := range strings.Lines(string(data)) {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		name, pidText, ok := strings.Cut(line, " ")
		pid, err := strconv.Atoi(pidText)
		if !ok || err != nil || pid <= 1 {
			return nil, fmt.Errorf("%s: bad line %q", path, line)
		}
		entries = append(entries, pidEntry{name, pid})
	}
	return entries, nil
}

// checkPIDFile fails with ErrRunning when a process the file at path lists
// still runs, and removes a file whose processes are all gone.
func checkPIDFile(path string) error {
	entries, err := readPIDFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var running []string
	for _, e := range entries {
		if isGroupLeader(e.pid) {
			running = append(running, fmt.Sprintf("%s (pid %d)", e.name, e.pid))
		}
	}
	if len(running) > 0 {
		return fmt.Errorf("%w: %s lists %s", ErrRunning, path, strings.Join(running, ", "))
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale PID file: %w", err)
	}
	return nil
}

// isGroupLeader reports whether pid runs and leads its process group, as
// every process of a stack does: a PID reused since by an unrelated
// process rarely does. A zombie, dead but not yet reaped, does not run.
func isGroupLeader(pid int) bool {
	pgid, err := syscall.Getpgid(pid)
	if err != nil || pgid != pid {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)) // "pid (comm) state ..."
	if i := bytes.LastIndexByte(stat, ')'); err == nil && i > 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
		return false
	}
	return true
}

// StopPIDFile stops the processes a stack listed in path, last first, each
// with SIGTERM to its group and SIGKILL after timeout, then removes the
// file. It calls stopped for each process that was still running. A
// missing file is an error that wraps os.ErrNotExist.
func StopPIDFile(path string, timeout time.Duration, stopped func(name string, pid int)) error {
	entries, err := readPIDFile(path)
	if err != nil {
		return err
	}
	for i := len(entries) - 1; i >= 0; i-- {
		if stopPID(entries[i].pid, timeout) && stopped != nil {
			stopped(entries[i].name, entries[i].pid)
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
	if !isGroupLeader(pid) {
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
