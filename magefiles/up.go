package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/rollcall/rollcall/pkg/localstack"
)

// Up starts etcd, greeter instances (GREETERS, default 3) and the client demo; Ctrl-C stops them all.
//
// ETCD_ENDPOINTS set: use that etcd instead of starting one (ETCD_USERNAME,
// ETCD_PASSWORD, ETCD_CACERT... pass through to every process). TLS=1:
// mutual TLS between client and greeters, with throwaway certificates.
// DETACH=1: run in the background with logs in .run/logs; `down` stops it.
func Up(ctx context.Context) error {
	n, err := envInt("GREETERS", 3)
	if err != nil {
		return err
	}
	detached := os.Getenv("DETACH") != ""
	s, err := bringUp(ctx, n, detached)
	if err != nil {
		return err
	}
	client, err := s.startClient()
	if err != nil {
		s.stopAll()
		return err
	}
	s.Say("%s", s.metricsSummary())
	if detached {
		fmt.Printf("running in the background; logs in %s; stop with: go run mage.go down\n", filepath.Join(runDir, "logs"))
		return nil
	}
	defer s.stopAll()
	select {
	case <-ctx.Done():
		s.Say("stopping: client, then greeters (deregister, drain), then etcd")
	case <-client.Done():
	}
	return nil
}

// Down stops what a detached up left running, by the PIDs it recorded; data in .run stays.
func Down() error {
	pids := filepath.Join(runDir, "pids")
	err := localstack.StopPIDFile(pids, 15*time.Second, func(name string, pid int) {
		fmt.Printf("stopped %s (pid %d)\n", name, pid)
	})
	if errors.Is(err, os.ErrNotExist) {
		fmt.Println("nothing to stop: no", pids)
		return nil
	}
	return err
}
