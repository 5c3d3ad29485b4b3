package localstack

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// InstallDebian installs Debian packages with apt-get, as root or through
// sudo without a password, for the programs a test or benchmark needs
// beside Go (python3-grpcio, nginx). When apt-get fails, it updates the
// package lists (a fresh container has none) and tries once more. The
// error says why it cannot, with the command a user would run.
func InstallDebian(pkgs ...string) error {
	want := "apt-get install -y " + strings.Join(pkgs, " ")
	if _, err := exec.LookPath("apt-get"); err != nil {
		return fmt.Errorf("no apt-get here: install %s by other means", strings.Join(pkgs, ", "))
	}
	var apt []string
	switch {
	case os.Geteuid() == 0:
		apt = []string{"apt-get"}
	case exec.Command("sudo", "-n", "true").Run() == nil:
		apt = []string{"sudo", "-n", "apt-get"}
	default:
		return fmt.Errorf("apt-get cannot run here (not root, no passwordless sudo): run `%s` as root", want)
	}
	run := func(args ...string) error {
		cmd := exec.Command(apt[0], append(apt[1:], args...)...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s: %w\n%s", strings.Join(cmd.Args, " "), err, lastLines(out, 5))
		}
		return nil
	}
	args := append([]string{"install", "-y", "--no-install-recommends"}, pkgs...)
	err := run(args...)
	if err == nil {
		return nil
	}
	if uerr := run("update"); uerr != nil {
		return errors.Join(err, uerr)
	}
	return run(args...)
}

func lastLines(out []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}
