package flagenv_test

import (
	"errors"
	"flag"
	"maps"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rollcall/rollcall/pkg/flagenv"
)

// settings is a command's flags, as a program declares them.
type settings struct {
	addr   string
	n      int
	wait   time.Duration
	debug  bool
	peers  flagenv.List
	labels flagenv.Map
}

// env maps each flag of newFlags to its variable.
var env = map[string]string{
	"addr": "DEMO_ADDR", "n": "DEMO_N", "wait": "DEMO_WAIT", "debug": "DEMO_DEBUG",
	"peers": "DEMO_PEERS", "labels": "DEMO_LABELS",
}

// newFlags returns the flag set "demo", writing to out, and what it sets.
func newFlags(out *strings.Builder) (*flag.FlagSet, *settings) {
	s := &settings{}
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&s.addr, "addr", ":8080", "address to listen on")
	fs.IntVar(&s.n, "n", 3, "how many")
	fs.DurationVar(&s.wait, "wait", time.Second, "how long to wait")
	fs.BoolVar(&s.debug, "debug", false, "log more")
	fs.Var(&s.peers, "peers", "comma-separated peers")
	fs.Var(&s.labels, "labels", "k=v,k=v")
	return fs, s
}

// getenv looks variables up in vars only, so that the developer's
// environment never reaches a test.
func getenv(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func TestParseTakesFlagOverEnvironmentOverDefault(t *testing.T) {
	tests := []struct {
		name      string
		args      []string
		vars      map[string]string
		wantAddr  string
		wantN     int
		wantPeers []string
	}{
		{"neither gives the default", nil, nil, ":8080", 3, nil},
		{"variable over default", nil, map[string]string{"DEMO_ADDR": ":9090", "DEMO_N": "7"}, ":9090", 7, nil},
		{"flag over variable", []string{"-addr", ":7070", "-n", "9"}, map[string]string{"DEMO_ADDR": ":9090", "DEMO_N": "7"}, ":7070", 9, nil},
		{"flag over default", []string{"-n", "5"}, nil, ":8080", 5, nil},
		{"empty variable counts as unset", nil, map[string]string{"DEMO_ADDR": "", "DEMO_N": ""}, ":8080", 3, nil},
		{"empty flag still beats variable", []string{"-addr="}, map[string]string{"DEMO_ADDR": ":9090"}, "", 3, nil},
		{"list flag replaces the variable's list", []string{"-peers", "c"}, map[string]string{"DEMO_PEERS": "a,b"}, ":8080", 3, []string{"c"}},
		{"list from the variable", nil, map[string]string{"DEMO_PEERS": "a, b"}, ":8080", 3, []string{"a", "b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out strings.Builder
			fs, s := newFlags(&out)
			if err := flagenv.Parse(fs, env, tt.args, getenv(tt.vars)); err != nil {
				t.Fatal(err)
			}
			if s.addr != tt.wantAddr || s.n != tt.wantN || !slices.Equal(s.peers, tt.wantPeers) {
				t.Errorf("addr %q, n %d, peers %q; want %q, %d, %q", s.addr, s.n, s.peers, tt.wantAddr, tt.wantN, tt.wantPeers)
			}
		})
	}
}

// A bad value is one line naming where it came from and the value, and
// prints nothing else: no usage text burying the error.
func TestParseBadValueErrorNamesSourceAndValueWithoutUsage(t *testing.T) {
	tests := []struct {
		args    []string
		vars    map[string]string
		wantErr string
	}{
		{nil, map[string]string{"DEMO_N": "ten"}, `invalid DEMO_N="ten": `},
		{nil, map[string]string{"DEMO_WAIT": "soon"}, `invalid DEMO_WAIT="soon": `},
		{nil, map[string]string{"DEMO_DEBUG": "maybe"}, `invalid DEMO_DEBUG="maybe": `},
		{nil, map[string]string{"DEMO_LABELS": "zone"}, `invalid DEMO_LABELS="zone": "zone" is not key=value`},
		// The variable is bad even where the flag overrides it: a
		// deployment's mistake should not hide until the flag goes.
		{[]string{"-n", "5"}, map[string]string{"DEMO_N": "ten"}, `invalid DEMO_N="ten": `},
		{[]string{"-n", "ten"}, nil, `invalid value "ten" for flag -n: `},
		{[]string{"-labels", "=x"}, nil, `invalid value "=x" for flag -labels: "=x" is not key=value`},
		{[]string{"-nope"}, nil, "flag provided but not defined: -nope"},
	}
	for _, tt := range tests {
		t.Run(tt.wantErr, func(t *testing.T) {
			var out strings.Builder
			fs, _ := newFlags(&out)
			err := flagenv.Parse(fs, env, tt.args, getenv(tt.vars))
			if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) || strings.Contains(err.Error(), "\n") {
				t.Errorf("Parse error = %v, want one line starting %q", err, tt.wantErr)
			}
			if out.Len() > 0 {
				t.Errorf("Parse printed on a bad value:\n%s", out.String())
			}
		})
	}
}

func TestParseVariableForUndefinedFlagIsAnErrorOnlyWhenSet(t *testing.T) {
	withGhost := map[string]string{"ghost": "DEMO_GHOST"}
	var out strings.Builder
	fs, _ := newFlags(&out)
	if err := flagenv.Parse(fs, withGhost, nil, getenv(nil)); err != nil {
		t.Errorf("unset DEMO_GHOST: Parse error %v, want none", err)
	}
	fs, _ = newFlags(&out)
	err := flagenv.Parse(fs, withGhost, nil, getenv(map[string]string{"DEMO_GHOST": "boo"}))
	if want := "flagenv: no flag -ghost for DEMO_GHOST"; err == nil || err.Error() != want {
		t.Errorf("Parse error = %v, want %q", err, want)
	}
}

func TestParseRejectsPositionalArguments(t *testing.T) {
	var out strings.Builder
	fs, _ := newFlags(&out)
	err := flagenv.Parse(fs, env, []string{"-n", "1", "extra", "-addr", ":1"}, getenv(nil))
	if want := `unexpected arguments ["extra" "-addr" ":1"]`; err == nil || err.Error() != want {
		t.Errorf("Parse error = %v, want %q", err, want)
	}
}

// envLine is how deployments/helpers_test.go reads a fallback from a
// binary's -h: the format is a contract with it.
var envLine = regexp.MustCompile(`^  -(\S+)\s+<- \$(\S+)$`)

func TestHelpPrintsFlagsThenEnvironmentFallbacksOnce(t *testing.T) {
	var defaults strings.Builder
	fs, _ := newFlags(&defaults)
	fs.PrintDefaults()
	want := "Usage of demo:\n" + defaults.String() + "Environment fallbacks:\n" +
		"  -addr  <- $DEMO_ADDR\n" +
		"  -debug  <- $DEMO_DEBUG\n" +
		"  -labels  <- $DEMO_LABELS\n" +
		"  -n  <- $DEMO_N\n" +
		"  -peers  <- $DEMO_PEERS\n" +
		"  -wait  <- $DEMO_WAIT\n"

	for _, arg := range []string{"-h", "-help", "--help"} {
		t.Run(arg, func(t *testing.T) {
			var out strings.Builder
			fs, _ := newFlags(&out)
			err := flagenv.Parse(fs, env, []string{arg}, getenv(nil))
			if !errors.Is(err, flag.ErrHelp) {
				t.Errorf("Parse error = %v, want flag.ErrHelp", err)
			}
			if out.String() != want {
				t.Errorf("usage:\n%s\nwant:\n%s", out.String(), want)
			}
			got := map[string]string{}
			for line := range strings.Lines(out.String()[strings.Index(out.String(), "Environment fallbacks:\n"):]) {
				if m := envLine.FindStringSubmatch(strings.TrimSuffix(line, "\n")); m != nil {
					got[m[1]] = m[2]
				}
			}
			if !maps.Equal(got, env) {
				t.Errorf("fallbacks as deployments read them: %v, want %v", got, env)
			}
		})
	}
}

func TestListSetReplacesWithTrimmedNonEmptyItems(t *testing.T) {
	tests := []struct {
		value string
		want  []string
	}{
		{"a,b", []string{"a", "b"}},
		{" a , b ,, c ,", []string{"a", "b", "c"}},
		{"", nil},
		{" , ", nil},
	}
	for _, tt := range tests {
		l := flagenv.List{"old"}
		if err := l.Set(tt.value); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(l, tt.want) {
			t.Errorf("Set(%q) = %q, want %q", tt.value, l, tt.want)
		}
		if got, want := l.String(), strings.Join(tt.want, ","); got != want {
			t.Errorf("after Set(%q), String() = %q, want %q", tt.value, got, want)
		}
	}
}

func TestMapSetReplacesWithTrimmedPairs(t *testing.T) {
	tests := []struct {
		value string
		want  flagenv.Map
	}{
		{"zone=a,tier=web", flagenv.Map{"zone": "a", "tier": "web"}},
		{" zone = a ,, tier=web ,", flagenv.Map{"zone": "a", "tier": "web"}},
		{"empty=", flagenv.Map{"empty": ""}},
		{"url=a=b", flagenv.Map{"url": "a=b"}},
		{"", flagenv.Map{}},
	}
	for _, tt := range tests {
		m := flagenv.Map{"old": "x"}
		if err := m.Set(tt.value); err != nil {
			t.Fatalf("Set(%q): %v", tt.value, err)
		}
		if !maps.Equal(m, tt.want) {
			t.Errorf("Set(%q) = %v, want %v", tt.value, m, tt.want)
		}
	}
}

func TestMapSetRejectsItemWithoutKeyAndKeepsTheMap(t *testing.T) {
	for _, value := range []string{"zone", "zone=a,tier", "=a", " =a"} {
		m := flagenv.Map{"old": "x"}
		if err := m.Set(value); err == nil || !strings.Contains(err.Error(), "is not key=value") {
			t.Errorf("Set(%q) error = %v, want one saying an item is not key=value", value, err)
		}
		if !maps.Equal(m, flagenv.Map{"old": "x"}) {
			t.Errorf("after a failed Set(%q), map = %v, want it unchanged", value, m)
		}
	}
}

// The usage shows a Map flag's default through String: the same map must
// read the same every time.
func TestMapStringIsSortedByKey(t *testing.T) {
	m := flagenv.Map{"c": "3", "a": "1", "b": "2", "e": "5", "d": "4"}
	for range 20 {
		if got := m.String(); got != "a=1,b=2,c=3,d=4,e=5" {
			t.Fatalf("String() = %q, want a=1,b=2,c=3,d=4,e=5", got)
		}
	}
}
