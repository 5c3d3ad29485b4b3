package main

import (
	"fmt"
	"os/exec"
	"slices"
	"strings"

	"github.com/magefile/mage/mg"
)

const (
	composeFile = "deployments/compose/compose.yaml"
	// composeProject names the stack of compose:up; the test makes its own.
	composeProject = "rollcall"
)

// Compose runs the stack of deployments/compose: three etcd members, three greeters and the client.
type Compose mg.Namespace

// Up builds the images and starts the Compose stack in the background; compose:down removes it.
func (Compose) Up() error {
	mg.Deps(Docker.Build)
	compose, err := composeCommand()
	if err != nil {
		return err
	}
	if err := runCompose(compose, "up", "--detach", "--remove-orphans"); err != nil {
		return err
	}
	base := strings.Join(append(compose, "-p", composeProject, "-f", composeFile), " ")
	fmt.Printf("running: three etcd members, three greeters, the client\n"+
		"  follow the client:  %s logs -f client\n"+
		"  stop and remove:    go run mage.go compose:down\n", base)
	return nil
}

// Down stops the Compose stack of compose:up and removes its containers, networks and volumes.
func (Compose) Down() error {
	compose, err := composeCommand()
	if err != nil {
		return err
	}
	return runCompose(compose, "down", "--volumes", "--remove-orphans", "--timeout", "20")
}

// Test runs the Compose test (etcd leader killed, a greeter cut off from etcd, a greeter stopped: no call may fail), or says why it skips.
//
// It skips, with a message, when no Docker engine or compose tool
// answers; otherwise it builds the images and runs TestCompose and
// TestComposeUpAndDown in the deployments module, which clean up every
// container and network they made.
func (Compose) Test() error {
	if err := dockerAnswers(); err != nil {
		fmt.Printf("compose:test SKIPPED: %v\n", err)
		return nil
	}
	compose, err := composeCommand()
	if err != nil {
		fmt.Printf("compose:test SKIPPED: %v\n", err)
		return nil
	}
	mg.Deps(Docker.Build)
	// Cacheable: the test reads the images' IDs, so Go runs it again when
	// an image or the test changes, and only then. With -race, as
	// check:tests built it: only the test binary is linked again.
	return runIn("deployments", []string{"ROLLCALL_COMPOSE=" + strings.Join(compose, " ")},
		"go", "test", "-race", "-vet=off", "-v", "-timeout", "15m", "-run", "^TestCompose", ".")
}

// composeCommand returns the compose CLI: `docker compose` when the plugin
// answers, else the standalone `docker-compose`.
func composeCommand() ([]string, error) {
	for _, cli := range [][]string{{"docker", "compose"}, {"docker-compose"}} {
		if exec.Command(cli[0], append(cli[1:], "version")...).Run() == nil {
			return cli, nil
		}
	}
	return nil, fmt.Errorf("neither `docker compose` nor `docker-compose` answers")
}

func runCompose(compose []string, args ...string) error {
	full := slices.Concat(compose[1:], []string{"-p", composeProject, "-f", composeFile}, args)
	return runIn(".", nil, compose[0], full...)
}
