//go:build wireinject

package main

import (
	"log/slog"

	"github.com/google/wire"

	"github.com/rollcall/rollcall/pkg/discovery"
	"github.com/rollcall/rollcall/pkg/telemetry"
	"github.com/rollcall/rollcall/services/client/internal/caller"
	"github.com/rollcall/rollcall/services/client/internal/config"
	"github.com/rollcall/rollcall/services/client/internal/greeter"
)

// wireCaller assembles the client from its configuration, giving each
// provider only its part of it.
func wireCaller(*config.Config, *slog.Logger) (*caller.Caller, func(), error) {
	panic(wire.Build(
		wire.FieldsOf(new(*config.Config), "Etcd", "Telemetry", "Target", "Calls"),
		discovery.ConnectEtcd, telemetry.New,
		greeter.ProviderSet, caller.ProviderSet,
	))
}
