package localstack

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Pause stops the process's group with SIGSTOP and returns once the
// process has stopped: the signal takes effect asynchronously. SIGCONT
// (Signal) resumes it.
func (p *Process) Pause() error {
	if err := p.Signal(unix.SIGSTOP); err != nil {
		return err
	}
	// WNOWAIT leaves the stop to be reported again and never reaps: the
	// stack's own wait for the exit stays the only one.
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, p.PID(), &info, unix.WSTOPPED|unix.WNOWAIT, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("wait for %s to stop: %w", p.Name, err)
		}
		return nil
	}
}
