//go:build wireinject

package main

import (
	"log/slog"

	"github.com/google/wire"

	"github.com/rollcall/rollcall/services/greeter/internal/config"
	"github.com/rollcall/rollcall/services/greeter/internal/server"
	"github.com/rollcall/rollcall/services/greeter/internal/service"
)

// wireApp assembles the greeter from its configuration.
func wireApp(*config.Config, *slog.Logger) (*app, func(), error) {
	panic(wire.Build(server.ProviderSet, service.ProviderSet, newApp))
}
