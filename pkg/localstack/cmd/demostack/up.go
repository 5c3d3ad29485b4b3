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

// up starts etcd, the greeters and the client, and stops them all when
// ctx ends or the client exits; detached, it leaves them running.
func up(ctx context.Context) error {
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

// down stops what a detached up left running, by the PIDs it recorded.
func down() error {
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
