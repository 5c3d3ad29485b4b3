// Command devcerts writes a throwaway CA, a server certificate for each
// service named and a client certificate, for a local demo of mutual TLS
// (`TLS=1 go run mage.go up`). Not for production.
//
//	devcerts -dir .run/tls -client client greeter [service...]
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/rollcall/rollcall/pkg/devcerts"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "devcerts:", err)
		os.Exit(2)
	}
}

func run() error {
	dir := flag.String("dir", ".", "directory to write the PEM files to")
	client := flag.String("client", "client", "name of the client certificate")
	flag.Parse()
	if flag.NArg() == 0 {
		return fmt.Errorf("name at least one service to make a server certificate for")
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return err
	}
	ca, err := devcerts.NewCA(*dir, "rollcall-dev")
	if err != nil {
		return err
	}
	for _, service := range flag.Args() {
		if _, err := ca.Server(service); err != nil {
			return err
		}
	}
	_, err = ca.Client(*client)
	return err
}
