module github.com/rollcall/rollcall/magefiles

go 1.26.0

require (
	github.com/bufbuild/protocompile v0.14.1
	github.com/magefile/mage v1.17.2
	golang.org/x/mod v0.20.0
	google.golang.org/protobuf v1.36.12
)

require golang.org/x/sync v0.24.0 // indirect
