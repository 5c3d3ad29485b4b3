package localstack_test

import (
	"fmt"
	"os"

	"github.com/rollcall/rollcall/pkg/localstack"
)

// A stack starts processes in their own process groups and prefixes their
// lines with their names; Close stops whatever still runs.
func Example() {
	dir, err := os.MkdirTemp("", "localstack-example-")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	s, err := localstack.New(localstack.Config{LogDir: dir, Output: os.Stdout})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close()
	p, err := s.Start(localstack.Command{Name: "hello", Path: "/bin/sh", Args: []string{"-c", "echo hello, world"}})
	if err != nil {
		fmt.Println(err)
		return
	}
	<-p.Done()
	s.Say("%s exited", p.Name)
	// Output:
	// hello     | hello, world
	// ==> hello exited
}
