//go:build !linux

package localstack

import "syscall"

// Pause stops the process's group with SIGSTOP; where waiting for the
// stop is not available it returns once the signal is sent.
func (p *Process) Pause() error { return p.Signal(syscall.SIGSTOP) }
