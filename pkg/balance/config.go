package balance

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"google.golang.org/grpc/serviceconfig"
)

// P2CConfig is rollcall_p2c_ewma's configuration, its JSON fields in the
// service config:
//
//	{"loadBalancingConfig":[{"rollcall_p2c_ewma":{"slowFactor":2,"stuckFactor":4,"failurePenalty":"1s","exploreShare":0.005,"vanishGrace":"30s"}}]}
//
// A field left out takes its default.
type P2CConfig struct {
	serviceconfig.LoadBalancingConfig `json:"-"`

	// SlowFactor: of the two instances drawn, the first loses to the
	// second when its latency estimate is more than SlowFactor times the
	// second's.
	// Closer than that, they count as equal and the registered weights
	// decide. Default 2; 1 to 1000.
	SlowFactor float64 `json:"slowFactor"`
	// StuckFactor: an instance with calls in flight and no answer for
	// StuckFactor times its latency estimate (at least minStuck) is
	// stuck, and loses to one that is not, whatever its estimate: calls
	// pile up on an instance whose answers stopped coming (a deadlocked
	// handler, a cold instance) before any of them ends to raise it.
	// Default 4; 1 to 100.
	StuckFactor float64 `json:"stuckFactor"`
	// FailurePenalty is the latency a failure of the instance counts as
	// (UNAVAILABLE, RESOURCE_EXHAUSTED, running out of time on its own, a
	// stall), when it took less. Default 1s; 1ms to 1m.
	FailurePenalty Duration `json:"failurePenalty"`
	// ExploreShare is the share of picks that skip the comparison, so an
	// instance that was slow keeps being sampled and is noticed when it
	// recovers. Default 0.005; 0 to 0.5.
	ExploreShare float64 `json:"exploreShare"`
	// VanishGrace: as in WeightedConfig.
	VanishGrace Duration `json:"vanishGrace"`
}

// WeightedConfig is rollcall_weighted's configuration: it has only the
// failure penalty, which feeds the latency figures the policy keeps.
type WeightedConfig struct {
	serviceconfig.LoadBalancingConfig `json:"-"`

	// FailurePenalty: as in P2CConfig.
	FailurePenalty Duration `json:"failurePenalty"`
	// VanishGrace is how long instances are kept after most or all of them
	// left the resolver's list at once (within 5 s) while their
	// connections were ready and their health service said SERVING: their
	// keys expired because they lost etcd, not because they stopped. An
	// instance that stopped (NOT_SERVING, connection closed) is never
	// kept. Default 30s; 0 turns it off; at most 10m.
	VanishGrace Duration `json:"vanishGrace"`
}

// vanishGrace is cfg's VanishGrace.
func vanishGrace(cfg serviceconfig.LoadBalancingConfig) time.Duration {
	switch c := cfg.(type) {
	case *P2CConfig:
		return time.Duration(c.VanishGrace)
	case *WeightedConfig:
		return time.Duration(c.VanishGrace)
	}
	return 0
}

// Duration is a time.Duration written in JSON as a string ("1s", "250ms").
type Duration time.Duration

// UnmarshalJSON reads a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("%s is not a duration string like \"1s\"", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is not a duration: %w", s, err)
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON writes a duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

const (
	defaultPenalty     = Duration(time.Second)
	defaultVanishGrace = Duration(30 * time.Second)
)

func parseP2CConfig(js json.RawMessage) (serviceconfig.LoadBalancingConfig, error) {
	cfg := &P2CConfig{SlowFactor: 2, StuckFactor: 4, FailurePenalty: defaultPenalty, ExploreShare: 0.005, VanishGrace: defaultVanishGrace}
	if err := decodeStrict(P2CEWMA, js, cfg); err != nil {
		return nil, err
	}
	switch {
	case cfg.SlowFactor < 1 || cfg.SlowFactor > 1000:
		return nil, fmt.Errorf("%s: slowFactor %v: want 1 to 1000", P2CEWMA, cfg.SlowFactor)
	case cfg.StuckFactor < 1 || cfg.StuckFactor > 100:
		return nil, fmt.Errorf("%s: stuckFactor %v: want 1 to 100", P2CEWMA, cfg.StuckFactor)
	case cfg.ExploreShare < 0 || cfg.ExploreShare > 0.5:
		return nil, fmt.Errorf("%s: exploreShare %v: want 0 to 0.5", P2CEWMA, cfg.ExploreShare)
	}
	if err := checkDurations(P2CEWMA, cfg.FailurePenalty, cfg.VanishGrace); err != nil {
		return nil, err
	}
	return cfg, nil
}

func parseWeightedConfig(js json.RawMessage) (serviceconfig.LoadBalancingConfig, error) {
	cfg := &WeightedConfig{FailurePenalty: defaultPenalty, VanishGrace: defaultVanishGrace}
	if err := decodeStrict(Weighted, js, cfg); err != nil {
		return nil, err
	}
	if err := checkDurations(Weighted, cfg.FailurePenalty, cfg.VanishGrace); err != nil {
		return nil, err
	}
	return cfg, nil
}

func checkDurations(policy string, penalty, grace Duration) error {
	if penalty < Duration(time.Millisecond) || penalty > Duration(time.Minute) {
		return fmt.Errorf("%s: failurePenalty %v: want 1ms to 1m", policy, time.Duration(penalty))
	}
	if grace < 0 || grace > Duration(10*time.Minute) {
		return fmt.Errorf("%s: vanishGrace %v: want 0 to 10m", policy, time.Duration(grace))
	}
	return nil
}

// decodeStrict fills cfg from js (nothing when js is empty), rejecting
// unknown fields: a misspelt field would otherwise be silently ignored.
func decodeStrict(policy string, js json.RawMessage, cfg any) error {
	if len(bytes.TrimSpace(js)) == 0 || string(bytes.TrimSpace(js)) == "null" {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(cfg); err != nil {
		return fmt.Errorf("%s config %s: %w", policy, js, err)
	}
	return nil
}
