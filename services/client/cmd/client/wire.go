//go:build wireinject

package main

import (
	"log/slog"

	"github.com/google/wire"

	"github.com/rollcall/rollcall/services/client/internal/caller"
	"github.com/rollcall/rollcall/services/client/internal/config"
	"github.com/rollcall/rollcall/services/client/internal/greeter"
)

// wireCaller assembles the client from its configuration.
func wireCaller(*config.Config, *slog.Logger) (*caller.Caller, func(), error) {
	panic(wire.Build(greeter.ProviderSet, caller.ProviderSet))
}
