//go:build wireinject

package main

import (
	"log/slog"

	"github.com/google/wire"

	"github.com/rollcall/rollcall/pkg/discovery"
	"github.com/rollcall/rollcall/pkg/telemetry"
	"github.com/rollcall/rollcall/services/greeter/internal/biz"
	"github.com/rollcall/rollcall/services/greeter/internal/config"
	"github.com/rollcall/rollcall/services/greeter/internal/server"
	"github.com/rollcall/rollcall/services/greeter/internal/service"
)

// wireServer assembles the greeter from its configuration, giving each
// provider only its part of it.
func wireServer(*config.Config, *slog.Logger) (server.GRPCServer, func(), error) {
	panic(wire.Build(
		wire.FieldsOf(new(*config.Config), "Serve", "Etcd", "Telemetry", "Faults"),
		discovery.ConnectEtcd, telemetry.New,
		server.ProviderSet, service.ProviderSet, biz.ProviderSet,
	))
}
