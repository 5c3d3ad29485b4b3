package localstack

import (
	"fmt"
	"os"

	"github.com/rollcall/rollcall/pkg/devcerts"
)

// Certs are the files [MakeCerts] wrote.
type Certs struct {
	CAFile  string
	Servers map[string]devcerts.Pair // by service name
	Client  devcerts.Pair
}

// MakeCerts writes to dir a throwaway CA, a server certificate for each
// of servers and a client certificate named client, for mutual TLS
// between local processes.
func MakeCerts(dir, client string, servers ...string) (*Certs, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("certificates: %w", err)
	}
	ca, err := devcerts.NewCA(dir, "rollcall-dev")
	if err != nil {
		return nil, fmt.Errorf("certificates: %w", err)
	}
	c := &Certs{CAFile: ca.CertFile, Servers: map[string]devcerts.Pair{}}
	for _, name := range servers {
		if c.Servers[name], err = ca.Server(name); err != nil {
			return nil, fmt.Errorf("certificate of %s: %w", name, err)
		}
	}
	if c.Client, err = ca.Client(client); err != nil {
		return nil, fmt.Errorf("certificate of %s: %w", client, err)
	}
	return c, nil
}
