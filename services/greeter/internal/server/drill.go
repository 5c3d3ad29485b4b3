package server

import (
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/rollcall/rollcall/services/greeter/internal/service"
)

// NewOutageDrill returns the outage switch of failure drills, which
// SIGUSR1 turns on and SIGUSR2 off until the cleanup.
func NewOutageDrill(log *slog.Logger) (*service.Outage, func()) {
	outage := new(service.Outage)
	drill := make(chan os.Signal, 1)
	signal.Notify(drill, syscall.SIGUSR1, syscall.SIGUSR2)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case sig := <-drill:
				on := sig == syscall.SIGUSR1
				outage.Set(on)
				log.Warn("outage drill", "on", on)
			case <-done:
				return
			}
		}
	})
	return outage, func() {
		signal.Stop(drill)
		close(done)
		wg.Wait()
	}
}
