package replicas_test

import (
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"
	"time"

	"github.com/recommender/recommender/pkg/aggregate"
	"github.com/recommender/recommender/pkg/flows"
	"github.com/recommender/recommender/pkg/lifecycle"
	"github.com/recommender/recommender/pkg/replicas"
)

// Ensure each replica's audit evidence travels with its summary: Peers lists every other
// member with the evidence of the last pull, Pulled only while it answers, and no replica
// that left the set.
func TestPeersCarryEvidence(t *testing.T) {
	ev := []lifecycle.Evidence{{Workload: "shop/k8s:app=db", State: lifecycle.Audit, Revision: "r1",
		WindowStart: time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC), WindowFlows: 7, LostRatio: 0.01}}
	var handler http.Handler
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { handler.ServeHTTP(w, r) }))
	urls := []string{"http://127.0.0.1:1", srv.URL}
	empty := func() *aggregate.Snapshot { return &aggregate.Snapshot{} }
	positions := func() (*flows.Cursor, error) { return flows.NewCursor(), nil }
	serving, err := replicas.New(replicas.Config{Self: 1, URLs: urls}, replicas.Local{Snapshot: empty, Positions: positions,
		Evidence: func() []lifecycle.Evidence { return ev }}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	handler = serving.Handler()
	pulling, err := replicas.New(replicas.Config{Self: 0, URLs: urls, Wait: time.Millisecond}, replicas.Local{Snapshot: empty, Positions: positions}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := pulling.Peers(); len(got) != 1 || got[0].Replica != "1" || got[0].Pulled || got[0].Evidence != nil {
		t.Errorf("Peers before any pull = %+v, want replica 1 not pulled", got)
	}
	pulling.Snapshot(t.Context())
	want := []lifecycle.Peer{{Replica: "1", Pulled: true, Evidence: ev}}
	if got := pulling.Peers(); !reflect.DeepEqual(got, want) {
		t.Errorf("Peers after a pull = %+v, want %+v", got, want)
	}
	srv.Close()
	pulling.Snapshot(t.Context())
	want[0].Pulled = false
	if got := pulling.Peers(); !reflect.DeepEqual(got, want) {
		t.Errorf("Peers with replica 1 gone = %+v, want its last evidence, not pulled", got)
	}
	// Its Lease expired (lease membership): its nodes are the others', its evidence no gate.
	if err := pulling.Assignment().SetMembers([]string{"0"}); err != nil {
		t.Fatal(err)
	}
	if got := pulling.Peers(); len(got) != 0 {
		t.Errorf("Peers with replica 1 no member = %+v, want none", got)
	}
	// This replica is no member (its own Lease not renewed, or not looked at yet): every
	// replica of the set counts again.
	if err := pulling.Assignment().SetMembers(nil); err != nil {
		t.Fatal(err)
	}
	if got := pulling.Peers(); !reflect.DeepEqual(got, want) {
		t.Errorf("Peers while no member itself = %+v, want %+v", got, want)
	}
}
