package resolve

import "golang.org/x/time/rate"

// Invalid values in etcd are logged at most maxInvalidLogs at once, then
// invalidLogsPerSecond: a prefix full of garbage must not flood the log.
// The rest are counted, and the count is logged after each list.
const (
	maxInvalidLogs       = 10
	invalidLogsPerSecond = 0.1
)

// invalidLog rate-limits the log lines about invalid values.
type invalidLog struct {
	limiter  *rate.Limiter
	unlogged int // values skipped without a log line since the last list
}

func newInvalidLog() invalidLog {
	return invalidLog{limiter: rate.NewLimiter(invalidLogsPerSecond, maxInvalidLogs)}
}

// allow reports whether one more invalid value may be logged now.
func (l *invalidLog) allow() bool {
	if l.limiter.Allow() {
		return true
	}
	l.unlogged++
	return false
}
