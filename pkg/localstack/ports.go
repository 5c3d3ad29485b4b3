package localstack

import (
	"errors"
	"fmt"
	"net"
	"sync"
)

var (
	portsMu sync.Mutex
	given   = map[string]bool{} // addresses FreePort returned
)

// FreePort returns a 127.0.0.1 address whose TCP port was free just now
// and that it has not returned before in this process. The kernel may
// offer a port that was released a moment ago again, before the process
// it went to has bound it: two instances started one after the other
// would then get the same port.
func FreePort() (string, error) {
	portsMu.Lock()
	defer portsMu.Unlock()
	var held []net.Listener // ports returned before, kept bound so they are not offered again
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	for range 64 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", fmt.Errorf("find a free port on 127.0.0.1: %w", err)
		}
		addr := l.Addr().String()
		if given[addr] {
			held = append(held, l)
			continue
		}
		l.Close()
		given[addr] = true
		return addr, nil
	}
	return "", errors.New("find a free port on 127.0.0.1: every port offered had been returned before")
}
