//go:build ignore

// Zero-install entry point for mage: `go run mage.go TARGET` works on a
// machine that has only Go. `go tool mage TARGET` works too.
package main

import (
	"os"

	"github.com/magefile/mage/mage"
)

func main() { os.Exit(mage.Main()) }
