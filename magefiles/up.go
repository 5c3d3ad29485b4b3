package main

import (
	"fmt"
	"os"
	"path/filepath"
)

// Up starts etcd, greeter instances (GREETERS, default 3) and the client demo; Ctrl-C stops them all.
//
// ETCD_ENDPOINTS set: use that etcd instead of starting one (ETCD_USERNAME,
// ETCD_PASSWORD, ETCD_CACERT... pass through to every process). TLS=1:
// mutual TLS between client and greeters, with throwaway certificates.
// DETACH=1: run in the background (logs in .run/logs) until `down`. XDS=1: the client calls through services/xds.
func Up() error { return demostack("up") }

// Down stops what a detached up left running, by the PIDs it recorded; data in .run stays.
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
	return runIn(dir, nil, "go", "build", "-o", abs, pkg)
}

// demostack runs pkg/localstack/cmd/demostack's command (up, down, kill,
// scale, rolling) after building what it starts. It shares mage's process
// group, so Ctrl-C reaches it, and it stops its stack.
func demostack(command string) error {
	if command != "down" {
		if err := buildBinaries(); err != nil {
			return err
		}
	}
	if err := goBuild("pkg", "demostack", "./localstack/cmd/demostack"); err != nil {
		return err
	}
	return runIn(".", nil, filepath.Join("bin", "demostack"), command)
}
