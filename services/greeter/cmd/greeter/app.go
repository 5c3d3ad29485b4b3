package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"

	greeterv1 "github.com/rollcall/rollcall/api/greeter/v1"
	"github.com/rollcall/rollcall/pkg/serve"
	"github.com/rollcall/rollcall/services/greeter/internal/service"
)

// app is the greeter assembled: its service on its server.
type app struct {
	server  *serve.Server
	greeter *service.Greeter
	log     *slog.Logger
}

func newApp(server *serve.Server, greeter *service.Greeter, log *slog.Logger) *app {
	greeterv1.RegisterGreeterServiceServer(server, greeter)
	return &app{server: server, greeter: greeter, log: log}
}

// Run serves until ctx ends, then stops in order. Meanwhile SIGUSR1
// starts an outage drill (every call fails UNAVAILABLE) and SIGUSR2 ends it.
func (a *app) Run(ctx context.Context) error {
	drill := make(chan os.Signal, 1)
	signal.Notify(drill, syscall.SIGUSR1, syscall.SIGUSR2)
	defer signal.Stop(drill)
	done := make(chan struct{})
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(done)
	wg.Go(func() {
		for {
			select {
			case sig := <-drill:
				on := sig == syscall.SIGUSR1
				a.greeter.SetOutage(on)
				a.log.Warn("outage drill", "on", on)
			case <-done:
				return
			}
		}
	})
	return a.server.Run(ctx)
}
