package main

import (
	"bytes"
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// committedDoc is docs/benchmarks.md as the last full run wrote it.
const committedDoc = "../../../docs/benchmarks.md"

// changedRow starts the rows that are not compared: the committed run
// predates the throughput scenario's current figure (the spread of the
// pairs, the client's CPU per call) and its description.
const changedRow = "| throughput |"

// newScenarios postdate the committed run: the doc is made as it was
// without them (their rows, and their names among the scenarios that
// count attempts), until a full run writes it again.
var newScenarios = []string{"zone", "zone-short", "zone-down", "bad-deploy", "panic", "slow-start"}

func TestWriteDocRemakesTheCommittedDoc(t *testing.T) {
	all := scenarios
	scenarios = slices.DeleteFunc(slices.Clone(scenarios), func(sc scenario) bool { return slices.Contains(newScenarios, sc.name) })
	t.Cleanup(func() { scenarios = all })
	raw, err := os.ReadFile(committedDoc)
	if err != nil {
		t.Fatal(err)
	}
	want := string(raw)
	m := committedMachine(t, want)
	results := committedResults(t, section(t, want, "## Every run, as JSON lines\n\n```\n", "```\n"))
	goBenchmarks := section(t, want, "## Go benchmarks\n\nCompare runs with benchstat.\n\n```\n", "```\n")

	var got bytes.Buffer
	if err := writeDoc(&got, m, results, goBenchmarks); err != nil {
		t.Fatal(err)
	}
	gotLines, wantLines := strings.Split(got.String(), "\n"), strings.Split(want, "\n")
	if len(gotLines) != len(wantLines) {
		t.Fatalf("doc has %d lines, the committed one %d:\n%s", len(gotLines), len(wantLines), got.String())
	}
	changed := 0
	for i := range wantLines {
		if strings.HasPrefix(wantLines[i], changedRow) {
			if !strings.HasPrefix(gotLines[i], changedRow) {
				t.Errorf("line %d: got %q, want the throughput row", i+1, gotLines[i])
			}
			changed++
			continue
		}
		if gotLines[i] != wantLines[i] {
			t.Errorf("line %d:\ngot  %q\nwant %q", i+1, gotLines[i], wantLines[i])
		}
	}
	if changed != 2 {
		t.Errorf("%d throughput rows, want 2 (its description and its result)", changed)
	}
}

func committedMachine(t *testing.T, doc string) machine {
	t.Helper()
	line := regexp.MustCompile(`on ([0-9-]+): ([0-9]+) cores \((.*)\), (go[^ ]+)\. Do not edit`).FindStringSubmatch(doc)
	if line == nil {
		t.Fatalf("%s: no line saying where it ran", committedDoc)
	}
	cores, err := strconv.Atoi(line[2])
	if err != nil {
		t.Fatal(err)
	}
	return machine{date: line[1], cores: cores, cpu: line[3], goVersion: line[4]}
}

func committedResults(t *testing.T, lines string) []result {
	t.Helper()
	var results []result
	for line := range strings.SplitSeq(strings.TrimSuffix(lines, "\n"), "\n") {
		var r result
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("%s: %q: %v", committedDoc, line, err)
		}
		results = append(results, r)
	}
	return results
}

// section is the text of doc between the first start and the next end.
func section(t *testing.T, doc, start, end string) string {
	t.Helper()
	_, after, ok := strings.Cut(doc, start)
	if !ok {
		t.Fatalf("%s: no %q", committedDoc, start)
	}
	text, _, ok := strings.Cut(after, end)
	if !ok {
		t.Fatalf("%s: no %q after %q", committedDoc, end, start)
	}
	return text
}

func TestScenarioRecordsAreComplete(t *testing.T) {
	seen := map[string]bool{}
	for _, sc := range scenarios {
		if seen[sc.name] {
			t.Errorf("scenario %q twice", sc.name)
		}
		if sc.describedWith != "" && !seen[sc.describedWith] {
			t.Errorf("%s: described with %q, which is not an earlier scenario", sc.name, sc.describedWith)
		}
		seen[sc.name] = true
		if (sc.event == "" || sc.figure == "") && sc.describedWith == "" {
			t.Errorf("%s: no event or figure for the doc", sc.name)
		}
		if sc.target.text == "" || sc.target.check == nil {
			t.Errorf("%s: no target", sc.name)
		}
		if (sc.run == nil) == (sc.runAlone == nil) {
			t.Errorf("%s: want exactly one of run and runAlone", sc.name)
		}
	}
}

func TestSelectScenarios(t *testing.T) {
	got, err := selectScenarios("herd,kill")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].name != "herd" || got[1].name != "kill" {
		t.Errorf("selectScenarios(herd,kill) = %v, want herd then kill", got)
	}
	all, err := selectScenarios("")
	if err != nil || len(all) != len(scenarios) {
		t.Errorf("selectScenarios(\"\") = %d scenarios, %v; want all %d", len(all), err, len(scenarios))
	}
	if _, err := selectScenarios("kill,kil"); err == nil || !strings.Contains(err.Error(), `"kil"`) {
		t.Errorf("selectScenarios(kill,kil) error = %v, want one naming \"kil\"", err)
	}
}
