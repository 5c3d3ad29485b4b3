package balance

import "time"

// SetSlowStartAfter makes instances that join slow-started once another
// has been ready for d, until the test ends.
func SetSlowStartAfter(tb interface{ Cleanup(func()) }, d time.Duration) {
	old := slowStartAfter
	slowStartAfter = d
	tb.Cleanup(func() { slowStartAfter = old })
}
