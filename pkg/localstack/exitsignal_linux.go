package localstack

import "syscall"

// killWithParent has the kernel kill the child when this process exits.
func killWithParent(attr *syscall.SysProcAttr) { attr.Pdeathsig = syscall.SIGKILL }
