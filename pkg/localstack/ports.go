package localstack

import (
	"fmt"
	"net"
)

// FreePort returns a 127.0.0.1 address whose TCP port was free just now.
func FreePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port on 127.0.0.1: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}
