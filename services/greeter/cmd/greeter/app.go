package main

import (
	"context"

	greeterv1 "github.com/rollcall/rollcall/api/greeter/v1"
	"github.com/rollcall/rollcall/pkg/serve"
	"github.com/rollcall/rollcall/services/greeter/internal/service"
)

// app is the greeter assembled: its service on its server.
type app struct {
	server *serve.Server
}

func newApp(server *serve.Server, greeter *service.Greeter) *app {
	greeterv1.RegisterGreeterServiceServer(server, greeter)
	return &app{server: server}
}

// Run serves until ctx ends, then stops in order.
func (a *app) Run(ctx context.Context) error { return a.server.Run(ctx) }
