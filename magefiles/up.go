package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Up starts etcd, greeter instances (GREETERS, default 3) and the client demo, with a live view on a terminal; q or Ctrl-C stops them all.
//
// ETCD_ENDPOINTS set: use that etcd instead of starting one (ETCD_USERNAME,
// ETCD_PASSWORD, ETCD_CACERT... pass through to every process). TLS=1:
// mutual TLS between client and greeters, with throwaway certificates.
// DETACH=1: run in the background (logs in .run/logs) until `down`. XDS=1: the client calls through services/xds.
func Up() error { return demostack("up") }

// Down stops the running stack (up in another terminal, or DETACH=1) through its supervisor; data in .run stays.
func Down() error { return demostack("down") }

// buildBinaries builds etcd (pinned by the pkg module, the same version as
// the client library), the greeter and the client into bin/.
func buildBinaries() error {
	if _, err := os.Stat("bin/etcd"); err != nil {
		fmt.Println("building etcd, greeter and client (first run only: about two minutes on two cores)...")
	} else {
		fmt.Println("building greeter and client...")
	}
	for _, b := range [][3]string{ // module, binary, package
		{"pkg", "etcd", "go.etcd.io/etcd/server/v3"},
		{"services/greeter", "greeter", "./cmd/greeter"},
		{"services/client", "client", "./cmd/client"},
		{"services/xds", "xds", "./cmd/xds"},
	} {
		if err := goBuild(b[0], b[1], b[2]); err != nil {
			return err
		}
	}
	return nil
}

// goBuild builds pkg of the module in dir into bin/binary.
func goBuild(dir, binary, pkg string) error {
	abs, err := filepath.Abs(filepath.Join("bin", binary))
	if err != nil {
		return err
	}
	return runIn(dir, binaryEnv, "go", "build", "-o", abs, pkg)
}

// demostack runs pkg/localstack/cmd/demostack's command (up, down, kill,
// scale, rolling) after building what it starts. It gets the terminal
// (stdin too): its live view reads keys, Ctrl-C among them, which then
// signals neither mage nor go run (they would exit with status 1).
func demostack(command string) error {
	if command != "down" {
		if err := buildBinaries(); err != nil {
			return err
		}
	}
	if err := goBuild("pkg", "demostack", "./localstack/cmd/demostack"); err != nil {
		return err
	}
	cmd := exec.Command(filepath.Join("bin", "demostack"), command)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	return cmd.Run()
}
