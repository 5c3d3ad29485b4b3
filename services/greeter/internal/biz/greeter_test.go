package biz_test

import (
	"testing"

	"github.com/rollcall/rollcall/pkg/discovery"
	"github.com/rollcall/rollcall/services/greeter/internal/biz"
)

func TestGreetNamesTheInstance(t *testing.T) {
	g := biz.NewGreeter(discovery.Instance{ID: "greeter-1", Addr: "127.0.0.1:50051"})
	for name, want := range map[string]string{
		"rollcall": "Hello rollcall from greeter-1 (127.0.0.1:50051)",
		"":         "Hello stranger from greeter-1 (127.0.0.1:50051)",
	} {
		if got := g.Greet(name); got != (biz.Greeting{Message: want, InstanceID: "greeter-1"}) {
			t.Errorf("Greet(%q) = %+v, want %q from greeter-1", name, got, want)
		}
	}
}
