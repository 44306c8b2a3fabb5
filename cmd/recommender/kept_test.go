package main

import (
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/recommender/recommender/pkg/aggregate"
	"github.com/recommender/recommender/pkg/flows"
	"github.com/recommender/recommender/pkg/replicas"
)

// keptReplicaStore returns the store of replica 0 of a set of two, which ingested the
// recording own (none when empty) and pulled, and so kept, the summary of replica 1, which
// observed the starwars recording; and that summary's edge count.
func keptReplicaStore(t *testing.T, own string) (string, int) {
	t.Helper()
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
	if own != "" {
		if _, err := execute(t, "ingest", "--flows", own, "--db", db); err != nil {
			t.Fatal(err)
		}
	}
	store, err := aggregate.Open(db, aggregate.Options{})
	if err != nil {
		t.Fatal(err)
	}
	mine, err := store.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	pulling, err := replicas.New(replicas.Config{Self: 0, URLs: []string{"http://127.0.0.1:1", srv.URL}},
		replicas.Local{Snapshot: func() *aggregate.Snapshot { return mine }, Positions: positions, Kept: store}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := pulling.Snapshot(t.Context()); got.EdgeCount() != snap.EdgeCount()+mine.EdgeCount() || snap.EdgeCount() == 0 {
		t.Fatalf("replica 0 merged %d edges, want its own %d and replica 1's %d", got.EdgeCount(), mine.EdgeCount(), snap.EdgeCount())
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	return db, snap.EdgeCount()
}

// Ensure that `run` alone (--replicas 1) on the store of a replica of a larger set still
// synthesizes from the other replicas' kept summaries: the set shrank to one, and the edges
// only the departed replica observed stay in the proposals.
func TestRunAloneMergesKeptSummaries(t *testing.T) {
	db, _ := keptReplicaStore(t, "")
	dir := t.TempDir()
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

// Ensure that `recommend --db` on a replica's store proposes what the whole set observed: the
// store's own edges merged with the other replica's kept summary give the policies one
// daemon reading both recordings writes, and `status` lists the kept summary.
func TestRecommendDBMergesKeptSummaries(t *testing.T) {
	db, keptEdges := keptReplicaStore(t, "../../testdata/flows/boutique.jsonl")
	dir := t.TempDir()
	fromDB, fromFlows := filepath.Join(dir, "db"), filepath.Join(dir, "flows")
	out, err := execute(t, "recommend", "--db", db, "--out", fromDB)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "merged with the summary of replica 1") {
		t.Errorf("recommend --db does not say it merged the kept summary:\n%s", out)
	}
	if _, err := execute(t, "recommend", "--flows", "../../testdata/flows/boutique.jsonl", "--flows", "../../testdata/flows/starwars.jsonl",
		"--out", fromFlows); err != nil {
		t.Fatal(err)
	}
	want, err := filepath.Glob(filepath.Join(fromFlows, "*.yaml"))
	if err != nil || len(want) == 0 {
		t.Fatalf("no policies from the recordings in %s (%v)", fromFlows, err)
	}
	got, err := filepath.Glob(filepath.Join(fromDB, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Errorf("recommend --db wrote %d policies, one daemon reading both recordings %d", len(got), len(want))
	}
	for _, f := range want {
		w, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		g, err := os.ReadFile(filepath.Join(fromDB, filepath.Base(f)))
		if err != nil {
			t.Errorf("recommend --db wrote no %s: %v", filepath.Base(f), err)
			continue
		}
		if string(g) != string(w) {
			t.Errorf("%s differs from one daemon's:\n%s\nwant:\n%s", filepath.Base(f), g, w)
		}
	}

	status, err := execute(t, "status", "--db", db, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var st aggregate.Status
	if err := json.Unmarshal([]byte(status), &st); err != nil {
		t.Fatalf("status -o json: %v\n%s", err, status)
	}
	if len(st.KeptSummaries) != 1 || st.KeptSummaries[0].Replica != 1 || st.KeptSummaries[0].Edges != keptEdges {
		t.Errorf("status lists kept summaries %+v, want replica 1's with %d edges", st.KeptSummaries, keptEdges)
	}
	table, err := execute(t, "status", "--db", db)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(table, "kept summary:") || !strings.Contains(table, "replica 1,") {
		t.Errorf("status table lists no kept summary:\n%s", table)
	}
}
