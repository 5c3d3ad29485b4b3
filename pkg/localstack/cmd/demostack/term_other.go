//go:build !linux

package main

import "os"

// stopWithParent does nothing where the kernel has no parent-death
// signal.
func stopWithParent() error { return nil }

// isTerminal is false: the live view needs Linux's terminal calls.
func isTerminal(*os.File) bool { return false }

// inForeground is false: the live view needs Linux's terminal calls.
func inForeground(*os.File) bool { return false }

// keysFromTerminal leaves the terminal alone: Ctrl-C stays a signal.
func keysFromTerminal(*os.File, func()) (func(), error) { return func() {}, nil }
