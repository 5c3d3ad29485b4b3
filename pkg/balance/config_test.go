package balance

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/balancer"
)

// ParseConfig of either policy accepts what its config documents and
// rejects anything else with an error that names the policy and the bad
// field or value.
func TestParseConfigNamesTheBadField(t *testing.T) {
	tests := []struct {
		name, policy, json, wantErr string
	}{
		{"valid: empty", P2CEWMA, `{}`, ""},
		{"valid: null", P2CEWMA, `null`, ""},
		{"valid: nothing", P2CEWMA, ` `, ""},
		{"valid: every field", P2CEWMA, `{"slowFactor":3,"stuckFactor":8,"failurePenalty":"250ms","exploreShare":0,"vanishGrace":"1m"}`, ""},
		{"valid: the bounds", P2CEWMA, `{"slowFactor":1000,"stuckFactor":1,"failurePenalty":"1m","exploreShare":0.5,"vanishGrace":"10m"}`, ""},
		{"valid: vanishGrace off", P2CEWMA, `{"vanishGrace":"0s"}`, ""},
		{"unknown field", P2CEWMA, `{"slowness":2}`, `unknown field "slowness"`},
		{"unknown field beside known ones", P2CEWMA, `{"slowFactor":2,"retries":3}`, `unknown field "retries"`},
		{"wrong type: number as string", P2CEWMA, `{"slowFactor":"2"}`, "slowFactor of type float64"},
		{"wrong type: duration as number", P2CEWMA, `{"failurePenalty":5}`, `5 is not a duration string like "1s"`},
		{"wrong type: not an object", P2CEWMA, `[]`, "cannot unmarshal array"},
		{"not a duration", P2CEWMA, `{"failurePenalty":"soon"}`, `"soon" is not a duration`},
		{"slowFactor below 1", P2CEWMA, `{"slowFactor":0.5}`, "slowFactor 0.5: want 1 to 1000"},
		{"slowFactor above 1000", P2CEWMA, `{"slowFactor":1001}`, "slowFactor 1001: want 1 to 1000"},
		{"stuckFactor below 1", P2CEWMA, `{"stuckFactor":0.5}`, "stuckFactor 0.5: want 1 to 100"},
		{"stuckFactor above 100", P2CEWMA, `{"stuckFactor":101}`, "stuckFactor 101: want 1 to 100"},
		{"exploreShare negative", P2CEWMA, `{"exploreShare":-0.1}`, "exploreShare -0.1: want 0 to 0.5"},
		{"exploreShare above 0.5", P2CEWMA, `{"exploreShare":0.9}`, "exploreShare 0.9: want 0 to 0.5"},
		{"failurePenalty zero", P2CEWMA, `{"failurePenalty":"0s"}`, "failurePenalty 0s: want 1ms to 1m"},
		{"failurePenalty above 1m", P2CEWMA, `{"failurePenalty":"2m"}`, "failurePenalty 2m0s: want 1ms to 1m"},
		{"vanishGrace negative", P2CEWMA, `{"vanishGrace":"-1s"}`, "vanishGrace -1s: want 0 to 10m"},

		// Traffic management, shared by both policies.
		{"valid: every traffic field", P2CEWMA, `{"zone":"eu-west-1a","slowStartWindow":"30s","outlierEjection":{"consecutiveFailures":3,` +
			`"failurePercentage":80,"minimumCalls":50,"interval":"10s","baseEjectionTime":"1m","maxEjectionTime":"10m","maxEjectionPercent":10,"panicThreshold":30}}`, ""},
		{"valid: everything off", P2CEWMA, `{"zone":"","slowStartWindow":"0s","outlierEjection":{"consecutiveFailures":0,"failurePercentage":0,"panicThreshold":0}}`, ""},
		{"valid: traffic bounds", P2CEWMA, `{"slowStartWindow":"10m","outlierEjection":{"consecutiveFailures":1000,"failurePercentage":100,"minimumCalls":1,` +
			`"interval":"100ms","baseEjectionTime":"100ms","maxEjectionTime":"100ms","maxEjectionPercent":100,"panicThreshold":100}}`, ""},
		{"zone too long", P2CEWMA, `{"zone":"` + strings.Repeat("z", 129) + `"}`, "zone of 129 bytes: want at most 128"},
		{"zone not a string", P2CEWMA, `{"zone":1}`, "zone of type string"},
		{"slowStartWindow negative", P2CEWMA, `{"slowStartWindow":"-1s"}`, "slowStartWindow -1s: want 0 to 10m"},
		{"slowStartWindow above 10m", P2CEWMA, `{"slowStartWindow":"11m"}`, "slowStartWindow 11m0s: want 0 to 10m"},
		{"outlierEjection not an object", P2CEWMA, `{"outlierEjection":5}`, "cannot unmarshal number"},
		{"outlierEjection unknown field", P2CEWMA, `{"outlierEjection":{"consecutive5xx":5}}`, `unknown field "consecutive5xx"`},
		{"consecutiveFailures negative", P2CEWMA, `{"outlierEjection":{"consecutiveFailures":-1}}`, "outlierEjection.consecutiveFailures -1: want 0 (off) to 1000"},
		{"consecutiveFailures above 1000", P2CEWMA, `{"outlierEjection":{"consecutiveFailures":1001}}`, "consecutiveFailures 1001"},
		{"failurePercentage above 100", P2CEWMA, `{"outlierEjection":{"failurePercentage":101}}`, "outlierEjection.failurePercentage 101: want 0 (off) to 100"},
		{"failurePercentage negative", P2CEWMA, `{"outlierEjection":{"failurePercentage":-5}}`, "failurePercentage -5"},
		{"minimumCalls zero", P2CEWMA, `{"outlierEjection":{"minimumCalls":0}}`, "outlierEjection.minimumCalls 0: want 1 to 1000000"},
		{"interval too short", P2CEWMA, `{"outlierEjection":{"interval":"10ms"}}`, "outlierEjection.interval 10ms: want 100ms to 10m"},
		{"interval not a duration", P2CEWMA, `{"outlierEjection":{"interval":"often"}}`, `"often" is not a duration`},
		{"baseEjectionTime too long", P2CEWMA, `{"outlierEjection":{"baseEjectionTime":"2h","maxEjectionTime":"3h"}}`, "outlierEjection.baseEjectionTime 2h0m0s: want 100ms to 1h"},
		{"maxEjectionTime below base", P2CEWMA, `{"outlierEjection":{"baseEjectionTime":"1m","maxEjectionTime":"30s"}}`, "outlierEjection.maxEjectionTime 30s: want baseEjectionTime (1m0s) to 24h"},
		{"maxEjectionPercent above 100", P2CEWMA, `{"outlierEjection":{"maxEjectionPercent":150}}`, "outlierEjection.maxEjectionPercent 150: want 0 to 100"},
		{"panicThreshold negative", P2CEWMA, `{"outlierEjection":{"panicThreshold":-1}}`, "outlierEjection.panicThreshold -1: want 0 (off) to 100"},

		{"valid: empty", Weighted, `{}`, ""},
		{"valid: every field", Weighted, `{"failurePenalty":"500ms","vanishGrace":"0s"}`, ""},
		{"unknown field", Weighted, `{"slowFactor":2}`, `unknown field "slowFactor"`},
		{"wrong type", Weighted, `{"vanishGrace":true}`, `true is not a duration string like "1s"`},
		{"failurePenalty below 1ms", Weighted, `{"failurePenalty":"500us"}`, "failurePenalty 500µs: want 1ms to 1m"},
		{"vanishGrace above 10m", Weighted, `{"vanishGrace":"1h"}`, "vanishGrace 1h0m0s: want 0 to 10m"},
		{"valid: traffic fields", Weighted, `{"zone":"b","slowStartWindow":"0s","outlierEjection":{"consecutiveFailures":7}}`, ""},
		{"slowStartWindow negative", Weighted, `{"slowStartWindow":"-1s"}`, "slowStartWindow -1s: want 0 to 10m"},
		{"panicThreshold above 100", Weighted, `{"outlierEjection":{"panicThreshold":101}}`, "panicThreshold 101"},
	}
	for _, tt := range tests {
		t.Run(tt.policy+" "+tt.name, func(t *testing.T) {
			_, err := balancer.Get(tt.policy).(balancer.ConfigParser).ParseConfig([]byte(tt.json))
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("ParseConfig(%s) error %v, want none", tt.json, err)
			case tt.wantErr == "":
			case err == nil:
				t.Errorf("ParseConfig(%s) took it, want an error containing %q", tt.json, tt.wantErr)
			case !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), tt.policy):
				t.Errorf("ParseConfig(%s) error %q, want one naming %s and containing %q", tt.json, err, tt.policy, tt.wantErr)
			}
		})
	}
}

// A field left out takes its default.
func TestParseConfigFillsDefaults(t *testing.T) {
	cfg, err := parseP2CConfig([]byte(`{"slowFactor":3}`))
	if err != nil {
		t.Fatal(err)
	}
	want := P2CConfig{SlowFactor: 3, StuckFactor: 4, FailurePenalty: Duration(time.Second), ExploreShare: 0.005, VanishGrace: Duration(30 * time.Second),
		Traffic: DefaultTraffic()}
	if c := cfg.(*P2CConfig); *c != want {
		t.Errorf("config %+v, want %+v", *c, want)
	}
	cfg, err = parseWeightedConfig([]byte(`{"vanishGrace":"0s","outlierEjection":{"consecutiveFailures":3}}`))
	if err != nil {
		t.Fatal(err)
	}
	traffic := DefaultTraffic()
	traffic.OutlierEjection.ConsecutiveFailures = 3 // the rest of the object keeps its defaults
	if c := cfg.(*WeightedConfig); *c != (WeightedConfig{FailurePenalty: Duration(time.Second), Traffic: traffic}) {
		t.Errorf("config %+v, want failurePenalty 1s, vanishGrace 0s, consecutiveFailures 3 and the other defaults", *c)
	}
}

// The default caps ejections at a third of the instances, rounded down;
// a percentage given to one decimal counts as the fraction it stands for.
func TestCanEject(t *testing.T) {
	third := DefaultOutlierEjection().MaxEjectionPercent
	tests := []struct {
		k, n    int
		percent float64
		want    bool
	}{
		{1, 3, third, true},
		{2, 3, third, false},
		{1, 2, third, false},
		{1, 1, third, false},
		{2, 6, third, true},
		{3, 6, third, false},
		{333, 1000, third, true},
		{334, 1000, third, false},
		{1, 3, 33.3, true},
		{1, 10, 10, true},
		{2, 10, 10, false},
		{1, 3, 0, false},
		{3, 3, 100, true},
	}
	for _, tt := range tests {
		if got := canEject(tt.k, tt.n, tt.percent); got != tt.want {
			t.Errorf("canEject(%d of %d, %v%%) = %v, want %v", tt.k, tt.n, tt.percent, got, tt.want)
		}
	}
}
