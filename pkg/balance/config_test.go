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

		{"valid: empty", Weighted, `{}`, ""},
		{"valid: every field", Weighted, `{"failurePenalty":"500ms","vanishGrace":"0s"}`, ""},
		{"unknown field", Weighted, `{"slowFactor":2}`, `unknown field "slowFactor"`},
		{"wrong type", Weighted, `{"vanishGrace":true}`, `true is not a duration string like "1s"`},
		{"failurePenalty below 1ms", Weighted, `{"failurePenalty":"500us"}`, "failurePenalty 500µs: want 1ms to 1m"},
		{"vanishGrace above 10m", Weighted, `{"vanishGrace":"1h"}`, "vanishGrace 1h0m0s: want 0 to 10m"},
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
	want := P2CConfig{SlowFactor: 3, StuckFactor: 4, FailurePenalty: Duration(time.Second), ExploreShare: 0.005, VanishGrace: Duration(30 * time.Second)}
	if c := cfg.(*P2CConfig); *c != want {
		t.Errorf("config %+v, want %+v", *c, want)
	}
	cfg, err = parseWeightedConfig([]byte(`{"vanishGrace":"0s"}`))
	if err != nil {
		t.Fatal(err)
	}
	if c := cfg.(*WeightedConfig); *c != (WeightedConfig{FailurePenalty: Duration(time.Second)}) {
		t.Errorf("config %+v, want failurePenalty 1s and vanishGrace 0s", *c)
	}
}
