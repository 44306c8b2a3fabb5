package replicas_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/recommender/recommender/pkg/aggregate"
	"github.com/recommender/recommender/pkg/flows"
	"github.com/recommender/recommender/pkg/replicas"
)

// servingSet is replica 1 of two serving snap, and the URL it serves on.
func servingSet(t *testing.T, snap *aggregate.Snapshot, wrap func(http.Handler) http.Handler) string {
	t.Helper()
	positions := func() (*flows.Cursor, error) { return flows.NewCursor(), nil }
	s, err := replicas.New(replicas.Config{Self: 1, URLs: []string{"http://127.0.0.1:1", "http://127.0.0.1:1"}},
		replicas.Local{Snapshot: func() *aggregate.Snapshot { return snap }, Positions: positions}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(wrap(s.Handler()))
	t.Cleanup(srv.Close)
	return srv.URL
}

// pullingSet is replica 0 of two with no edges of its own, pulling from url.
func pullingSet(t *testing.T, url string, cfg replicas.Config) (*replicas.Set, *prometheus.Registry) {
	t.Helper()
	cfg.Self, cfg.URLs = 0, []string{"http://127.0.0.1:1", url}
	positions := func() (*flows.Cursor, error) { return flows.NewCursor(), nil }
	reg := prometheus.NewRegistry()
	s, err := replicas.New(cfg, replicas.Local{Snapshot: func() *aggregate.Snapshot { return &aggregate.Snapshot{} }, Positions: positions},
		nil, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	return s, reg
}

// pulledBytes is recommender_replica_pulled_bytes_total.
func pulledBytes(t *testing.T, reg prometheus.Gatherer) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "recommender_replica_pulled_bytes_total" {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatal("no recommender_replica_pulled_bytes_total")
	return 0
}

func pulls(t *testing.T, reg prometheus.Gatherer, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "recommender_replica_pulls_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == result {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no pulls with result %s", result)
	return 0
}

// Ensure a summary reaches the puller whole whichever form it travels in: the binary form a
// replica of this version asks for, and the JSON form a replica of an older version serves
// (it ignores Accept) or asks for (it sends none), so a rollout mixing versions still merges.
func TestSummaryForms(t *testing.T) {
	snap := clusterSnapshot(t, 30, 4)
	want := aggregate.Merge(&aggregate.Snapshot{}, snap)
	oldServer := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			r.Header.Del("Accept")
			h.ServeHTTP(w, r)
		})
	}
	jsonForm, err := json.Marshal(replicas.Summary{Replica: 1, Snapshot: snap})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		wrap   func(http.Handler) http.Handler
		binary bool
	}{
		{"binary", func(h http.Handler) http.Handler { return h }, true},
		{"JSON from an older replica", oldServer, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, reg := pullingSet(t, servingSet(t, snap, c.wrap), replicas.Config{})
			got := s.Snapshot(t.Context())
			if pulls(t, reg, "ok") != 1 {
				t.Fatal("the summary was not pulled")
			}
			if n := pulledBytes(t, reg); c.binary != (n < float64(len(jsonForm))/4) {
				t.Errorf("pulled %.0f bytes, the JSON form is %d: binary form used %t, want %t", n, len(jsonForm), !c.binary, c.binary)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("merged %d edges and %d workloads, want %d and %d", got.EdgeCount(), len(got.Workloads), want.EdgeCount(), len(want.Workloads))
			}
		})
	}

	// What an older puller, which sends no Accept, is served.
	url := servingSet(t, snap, func(h http.Handler) http.Handler { return h })
	resp, err := http.Get(url + replicas.SummaryPath)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sum replicas.Summary
	if err := json.NewDecoder(resp.Body).Decode(&sum); err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" || sum.Snapshot == nil || sum.SnapshotBinary != nil {
		t.Fatalf("a puller asking for no form got %s, JSON snapshot %t, binary %d bytes; want the JSON form only", ct, sum.Snapshot != nil, len(sum.SnapshotBinary))
	}
	if sum.Snapshot.EdgeCount() != snap.EdgeCount() {
		t.Errorf("JSON form holds %d edges, want %d", sum.Snapshot.EdgeCount(), snap.EdgeCount())
	}
}

// Ensure the form served follows the Accept header: the binary form only when SummaryType is
// named and not refused (q=0), and the answer says it varies with Accept.
func TestSummaryNegotiation(t *testing.T) {
	url := servingSet(t, clusterSnapshot(t, 3, 2), func(h http.Handler) http.Handler { return h })
	for _, c := range []struct {
		accept []string
		want   string
	}{
		{nil, "application/json"},
		{[]string{"application/json"}, "application/json"},
		{[]string{replicas.SummaryType}, replicas.SummaryType},
		{[]string{"text/html, " + strings.ToUpper(replicas.SummaryType) + " ; q=0.9"}, replicas.SummaryType},
		{[]string{"application/json", replicas.SummaryType + ";q=0.5"}, replicas.SummaryType},
		{[]string{replicas.SummaryType + "; q=0"}, "application/json"},
		{[]string{replicas.SummaryType + ";q=0.0, application/json"}, "application/json"},
		{[]string{"application/vnd.recommender.summary.snapshot-v99+json"}, "application/json"},
	} {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url+replicas.SummaryPath, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range c.accept {
			req.Header.Add("Accept", a)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("Content-Type"); got != c.want {
			t.Errorf("Accept %q: served %s, want %s", c.accept, got, c.want)
		}
		if v := resp.Header.Get("Vary"); v != "Accept" {
			t.Errorf("Accept %q: Vary %q, want Accept", c.accept, v)
		}
	}
	if want := "snapshot-v" + strconv.Itoa(aggregate.SnapshotVersion) + "+json"; !strings.HasSuffix(replicas.SummaryType, want) {
		t.Errorf("SummaryType %s does not name the binary form's version (%s)", replicas.SummaryType, want)
	}
}

// Ensure a summary that is too large or damaged fails its pull, and the last good summary of
// that replica stays in the merge.
func TestSummaryRefused(t *testing.T) {
	snap := clusterSnapshot(t, 30, 4)
	good, err := snap.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var body atomic.Pointer[string] // what the replica answers; nil: its real summary
	url := servingSet(t, snap, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if b := body.Load(); b != nil {
				w.Write([]byte(*b))
				return
			}
			h.ServeHTTP(w, r)
		})
	})
	pos, err := flows.NewCursor().MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	s, reg := pullingSet(t, url, replicas.Config{MaxSummary: int64(len(good)) * 2})
	if got := s.Snapshot(t.Context()); got.EdgeCount() != snap.EdgeCount() {
		t.Fatalf("first pull merged %d edges, want %d", got.EdgeCount(), snap.EdgeCount())
	}
	for _, c := range []struct {
		name string
		body string
	}{
		// A summary that would be accepted but for the spaces that make it too large.
		{"larger than MaxSummary", "{" + strings.Repeat(" ", 4*len(good)) + mustJSON(t, replicas.Summary{Replica: 1, SnapshotBinary: good, Positions: pos})[1:]},
		{"damaged binary snapshot", mustJSON(t, replicas.Summary{Replica: 1, SnapshotBinary: good[:len(good)/2], Positions: pos})},
	} {
		t.Run(c.name, func(t *testing.T) {
			body.Store(&c.body)
			failed := pulls(t, reg, "error")
			got := s.Snapshot(context.Background())
			if pulls(t, reg, "error") != failed+1 {
				t.Fatal("the pull did not fail")
			}
			if got.EdgeCount() != snap.EdgeCount() {
				t.Errorf("after a refused pull the merge holds %d edges, want the last summary's %d", got.EdgeCount(), snap.EdgeCount())
			}
		})
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Ensure the summary bound grows with --max-edges past its default, so raising the cap on
// edges does not make every pull of a large replica fail.
func TestMaxSummaryFor(t *testing.T) {
	for _, c := range []struct {
		edges int
		want  int64
	}{
		{0, replicas.DefaultMaxSummary},
		{250_000, replicas.DefaultMaxSummary}, // the default --max-edges
		{1_000_000, 1_000_000 << 10},
	} {
		if got := replicas.MaxSummaryFor(c.edges); got != c.want {
			t.Errorf("MaxSummaryFor(%d) = %d, want %d", c.edges, got, c.want)
		}
	}
}
