package main

import "github.com/rollcall/rollcall/pkg/localstack"

// freeAddr returns a free 127.0.0.1 address for a flag of a process about
// to start; a machine without one cannot run any scenario.
func freeAddr() string {
	addr, err := localstack.FreePort()
	if err != nil {
		panic(err)
	}
	return addr
}
