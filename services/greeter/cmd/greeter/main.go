// Command greeter serves the greeter API and registers itself in etcd, so
// clients find it by name. Run with -h for its flags and environment.
// SIGUSR1 starts an outage drill (every call fails UNAVAILABLE), SIGUSR2
// ends it.
package main

import (
	"os"

	"github.com/rollcall/rollcall/pkg/logs"
	"github.com/rollcall/rollcall/services/greeter/internal/config"
)

func main() {
	os.Exit(logs.Main("greeter", config.Load, wireServer))
}
