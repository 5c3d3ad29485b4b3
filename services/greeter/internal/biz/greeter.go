// Package biz holds the greeter's business rules, with no knowledge of
// gRPC, etcd or configuration: the place for a service's domain logic.
package biz

import (
	"fmt"

	"github.com/google/wire"

	"github.com/rollcall/rollcall/pkg/discovery"
)

// ProviderSet is the business layer's providers.
var ProviderSet = wire.NewSet(NewGreeter)

// Greeting is one answer and the instance that gave it.
type Greeting struct {
	Message    string
	InstanceID string
}

// Greeter greets in the name of the instance that answers, so that a
// caller sees where each call went.
type Greeter struct {
	self string // "<id> (<addr>)"
	id   string
}

// NewGreeter returns a Greeter that answers as inst.
func NewGreeter(inst discovery.Instance) *Greeter {
	return &Greeter{self: fmt.Sprintf("%s (%s)", inst.ID, inst.Addr), id: inst.ID}
}

// Greet returns "Hello <name> from <id> (<addr>)"; an empty name is a
// stranger's.
func (g *Greeter) Greet(name string) Greeting {
	if name == "" {
		name = "stranger"
	}
	return Greeting{Message: fmt.Sprintf("Hello %s from %s", name, g.self), InstanceID: g.id}
}
