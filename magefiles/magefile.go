// Rollcall's build targets. Run `go run mage.go -l` (or `go tool mage -l`)
// from the repository root to list them; every target runs from the root.
package main

// One target or namespace per file, with the helpers only it uses.

// Default is what `mage` alone runs.
var Default = Test
