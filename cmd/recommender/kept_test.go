package main

import (
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/recommender/recommender/pkg/aggregate"
	"github.com/recommender/recommender/pkg/flows"
	"github.com/recommender/recommender/pkg/replicas"
)

// Ensure that `run` alone (--replicas 1) on the store of a replica of a larger set still
// synthesizes from the other replicas' kept summaries: the set shrank to one, and the edges
// only the departed replica observed stay in the proposals.
func TestRunAloneMergesKeptSummaries(t *testing.T) {
	dir := t.TempDir()
	// The departed replica 1 observed the starwars workloads.
	other := filepath.Join(dir, "replica-1.db")
	if _, err := execute(t, "ingest", "--flows", "../../testdata/flows/starwars.jsonl", "--db", other); err != nil {
		t.Fatal(err)
	}
	st, err := aggregate.Open(other, aggregate.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := st.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	read, err := st.Cursor()
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	positions := func() (*flows.Cursor, error) { return flows.NewCursor(), nil }
	urls := []string{"http://127.0.0.1:1", "http://127.0.0.1:1"}
	serving, err := replicas.New(replicas.Config{Self: 1, URLs: urls},
		replicas.Local{Snapshot: func() *aggregate.Snapshot { return snap }, Positions: func() (*flows.Cursor, error) { return read.Clone(), nil }}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(serving.Handler())
	defer srv.Close()

	// Replica 0 pulled (and kept) it while the set had two replicas.
	db := filepath.Join(dir, "replica-0.db")
	own, err := aggregate.Open(db, aggregate.Options{})
	if err != nil {
		t.Fatal(err)
	}
	pulling, err := replicas.New(replicas.Config{Self: 0, URLs: []string{"http://127.0.0.1:1", srv.URL}},
		replicas.Local{Snapshot: func() *aggregate.Snapshot { return &aggregate.Snapshot{} }, Positions: positions, Kept: own}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := pulling.Snapshot(t.Context()); got.EdgeCount() != snap.EdgeCount() || got.EdgeCount() == 0 {
		t.Fatalf("replica 0 merged %d edges, want replica 1's %d", got.EdgeCount(), snap.EdgeCount())
	}
	if err := own.Close(); err != nil {
		t.Fatal(err)
	}

	// Alone now, on its own store, reading the departed replica's nodes again from their
	// oldest flow (as a relay or a recording does): what the kept summary holds is not
	// counted again. Then reading the boutique.
	out := filepath.Join(dir, "out")
	for _, rec := range []string{"starwars", "boutique"} {
		if _, err := execute(t, "run", "--flows", "../../testdata/flows/"+rec+".jsonl", "--once", "--metrics-addr", "",
			"--db", db, "--out", out); err != nil {
			t.Fatal(err)
		}
		if rec != "starwars" {
			continue
		}
		st, err := aggregate.Open(db, aggregate.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		mine, err := st.Snapshot()
		st.Close()
		if err != nil {
			t.Fatal(err)
		}
		if mine.Flows != 0 {
			t.Errorf("the daemon alone stored %d flows of the departed replica's nodes, want none: they are in its kept summary", mine.Flows)
		}
	}
	var all strings.Builder
	files, err := filepath.Glob(filepath.Join(out, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no policies in %s (%v)", out, err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		all.Write(b)
	}
	for _, want := range []string{"deathstar", "frontend"} {
		if !strings.Contains(all.String(), want) {
			t.Errorf("no policy names %q: the proposals lack %s's edges", want,
				map[string]string{"deathstar": "the departed replica", "frontend": "this daemon"}[want])
		}
	}
}
