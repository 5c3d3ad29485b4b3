// Package localstack runs a stack of processes on one machine, for demos,
// benchmarks and tests: a real etcd (one member or a cluster) built from
// its Go module, and services started from their binaries.
//
// Every process runs in its own process group, so that a Ctrl-C at the
// terminal reaches only the program that owns the [Stack], which then stops
// them in the order it chooses, by PID; with [Config.KillOnExit] the kernel
// kills them when that program dies, however it dies (Linux). Their output
// goes, a line at a time and prefixed with the process's name, to one
// writer, or each to its own log file; a [Command.Tap] reads a process's
// lines first, to take a machine-readable feed out of them. A stack can
// record its PIDs in a file, so that another program can stop it later
// ([StopPIDFile]) and a second stack refuses to start over it, while a file
// whose processes are all gone (its owner was killed) is removed.
// [AwaitKeys] and [AwaitKeysGone] wait for registrations through an etcd
// client, [FreePort] finds a port and [MakeCerts] writes throwaway
// certificates for mutual TLS.
package localstack
