module github.com/rollcall/rollcall/magefiles

go 1.26.0

require (
	github.com/magefile/mage v1.17.2
	golang.org/x/mod v0.20.0
)
