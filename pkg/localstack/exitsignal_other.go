//go:build !linux

package localstack

import "syscall"

// killWithParent does nothing where the kernel has no parent-death signal.
func killWithParent(*syscall.SysProcAttr) {}
