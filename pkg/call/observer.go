package call

// Observer is told what the attempts machinery does, for metrics
// (pkg/telemetry exports it as Prometheus metrics). Its methods must be
// fast and must not block: they run on the call path.
type Observer interface {
	// Dialed is told of each connection Dial makes, with its retry
	// budget, so that the budget's state can be read at any time.
	Dialed(service string, budget Budget)
	// ExtraAttempt is told of each attempt after a call's first, of kind
	// KindRetry, KindHedge or KindStall.
	ExtraAttempt(service, kind string)
	// Denied is told when the retry budget refused an extra attempt.
	Denied(service, kind string)
}

// Budget is a connection's retry budget, read-only.
type Budget interface {
	// Available is how many extra attempts the budget allows now.
	Available() float64
}

type noObserver struct{}

func (noObserver) Dialed(string, Budget)       {}
func (noObserver) ExtraAttempt(string, string) {}
func (noObserver) Denied(string, string)       {}
