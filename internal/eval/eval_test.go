package eval

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/recommender/recommender/internal/flowgen"
	"github.com/recommender/recommender/pkg/aggregate"
	"github.com/recommender/recommender/pkg/audit"
)

// Ensure the scoring can fail: with no policy at all every attack gets through, nothing is
// denied, and every tuple of the universe is allowed.
func TestScoreWithoutPolicies(t *testing.T) {
	week, err := events(t.Context(), flowgen.Week)
	if err != nil {
		t.Fatal(err)
	}
	attacks, err := events(t.Context(), flowgen.WeekAttacks)
	if err != nil {
		t.Fatal(err)
	}
	r, err := scoreSet(audit.NewPolicySet(audit.Config{}), flowgen.WeekStart.Add(5*24*time.Hour), week, attacks)
	if err != nil {
		t.Fatal(err)
	}
	if r.HeldOut == 0 || r.FalseDenies != 0 {
		t.Errorf("held out %d, false denies %d; want some held-out flows and no denial", r.HeldOut, r.FalseDenies)
	}
	if r.Attacks == 0 || r.AttacksAllowed != r.Attacks || r.HTTPAttacks == 0 || r.HTTPAttacksAllowed != r.HTTPAttacks {
		t.Errorf("attacks %d/%d, http %d/%d allowed; want all of some", r.AttacksAllowed, r.Attacks, r.HTTPAttacksAllowed, r.HTTPAttacks)
	}
	if r.Observed == 0 || r.Allowed < r.Observed || len(r.Unobserved) != r.Allowed-r.Observed {
		t.Errorf("allowed %d (%d unobserved) of %d observed tuples; want every observed one and the rest listed", r.Allowed, len(r.Unobserved), r.Observed)
	}
}

// Ensure learned policies score better than none on every measure, and the table prints a
// row per case. The published numbers come from `make eval`; this does not gate on them.
func TestRunTable(t *testing.T) {
	rs, err := Run(t.Context(), Cases()[:1])
	if err != nil {
		t.Fatal(err)
	}
	r := rs[0]
	if r.Policies == 0 || r.AttacksAllowed >= r.Attacks || r.Allowed >= r.Observed*10 {
		t.Errorf("policies %d, attacks %d/%d, tuples %d/%d: learned policies should block attacks and most tuples",
			r.Policies, r.AttacksAllowed, r.Attacks, r.Allowed, r.Observed)
	}
	var b bytes.Buffer
	if err := WriteTable(&b, rs, false); err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(b.String(), "\n"); !strings.HasPrefix(lines[0], "CASE") || !strings.HasPrefix(lines[1], "default ") {
		t.Errorf("table:\n%s", b.String())
	}
	t.Log("\n" + b.String())
}

// Ensure the week's HTTP API, whose paths carry IDs, UUIDs and digests, fits the aggregator's
// default bound of HTTP samples per edge: a truncated edge stays at L4 and lets every HTTP
// attack on it through (issue 14), whatever synth could have written.
func TestWeekHTTPSamplesFitDefaultBound(t *testing.T) {
	week, err := events(t.Context(), flowgen.Week)
	if err != nil {
		t.Fatal(err)
	}
	agg, err := aggregate.NewAggregator(aggregate.Config{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range week {
		agg.Add(ev)
	}
	var http int
	for _, es := range agg.Snapshot().Edges {
		for _, e := range es {
			if len(e.HTTP) == 0 {
				continue
			}
			http++
			if e.Truncated {
				t.Errorf("edge %s %s %s %d: HTTP samples truncated at %d", e.Workload, e.Direction, e.Peer.Key(), e.Port, len(e.HTTP))
			}
		}
	}
	if http == 0 {
		t.Fatal("no edge carries HTTP samples; the week lost its API")
	}
}
