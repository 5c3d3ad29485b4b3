// Rollcall's build targets. Run `go run mage.go -l` (or `go tool mage -l`)
// from the repository root to list them; every target runs from the root.
package main

// One target or namespace per file, with the helpers only it uses.

import "fmt"

// Default is what `mage` alone runs.
var Default = Test

// Rename changes the module-path prefix of every module (for example to github.com/you/shop) and regenerates code.
func Rename(newPrefix string) error {
	old, err := modulePrefix()
	if err != nil {
		return err
	}
	if err := rename(old, newPrefix); err != nil {
		return fmt.Errorf("rename %s to %s: %w", old, newPrefix, err)
	}
	return Gen()
}
