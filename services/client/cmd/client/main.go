// Command client calls a service found through etcd, per call, and shows
// how the calls spread over its instances. Run with -h for its flags.
package main

import (
	"os"

	"github.com/rollcall/rollcall/pkg/logs"
	"github.com/rollcall/rollcall/services/client/internal/config"
)

func main() {
	os.Exit(logs.Main("client", config.Load, wireCaller))
}
