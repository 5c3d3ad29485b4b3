package main

import (
	"bytes"
	"fmt"
	"os"

	"github.com/muesli/cancelreader"
	"golang.org/x/sys/unix"
)

// stopWithParent has the kernel send SIGTERM to this process when its
// parent exits (mage killed), so that it stops its stack as on Ctrl-C.
func stopWithParent() error {
	parent := os.Getppid()
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGTERM), 0, 0, 0); err != nil {
		return fmt.Errorf("parent-death signal: %w", err)
	}
	if os.Getppid() != parent { // it died before the call: no signal will come
		return unix.Kill(os.Getpid(), unix.SIGTERM)
	}
	return nil
}

// isTerminal reports whether f is a terminal (not merely a character
// device, as /dev/null is).
func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// inForeground reports whether f is a terminal whose foreground process
// group is this process's: only then may it change the terminal's modes
// or read from it without being stopped (SIGTTOU, SIGTTIN).
func inForeground(f *os.File) bool {
	pgrp, err := unix.IoctlGetInt(int(f.Fd()), unix.TIOCGPGRP)
	return err == nil && pgrp == unix.Getpgrp()
}

// keysFromTerminal turns off the signal keys of the terminal on f and
// reads Ctrl-C and q from it as keys, calling stop for either, until
// restore is called, which puts the terminal back. Ctrl-C then stops the
// stack without a SIGINT to the processes above this one: `go run` exits
// with status 1 whenever it gets SIGINT, whatever its child does, and
// `tee` would die before showing the stop. It does nothing when f is not
// a terminal in the foreground.
func keysFromTerminal(f *os.File, stop func()) (restore func(), err error) {
	fd := int(f.Fd())
	if !inForeground(f) {
		return func() {}, nil
	}
	saved, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, fmt.Errorf("terminal modes: %w", err)
	}
	keys := *saved
	keys.Lflag &^= unix.ISIG | unix.ICANON | unix.ECHO
	keys.Cc[unix.VMIN], keys.Cc[unix.VTIME] = 1, 0
	r, err := cancelreader.NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("terminal input: %w", err)
	}
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &keys); err != nil {
		r.Close()
		return nil, fmt.Errorf("terminal modes: %w", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64)
		for {
			n, err := r.Read(buf)
			if err != nil {
				return
			}
			if bytes.ContainsAny(buf[:n], "\x03qQ") {
				stop()
			}
		}
	}()
	return func() {
		r.Cancel()
		<-done
		r.Close()
		unix.IoctlSetTermios(fd, unix.TCSETS, saved)
	}, nil
}
