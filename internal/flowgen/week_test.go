package flowgen

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/recommender/recommender/pkg/flows"
)

// weekEvents reads JSONL back strictly, as `recommend --flows` would.
func weekEvents(t *testing.T, jsonl []byte) []*flows.Event {
	t.Helper()
	path := filepath.Join(t.TempDir(), "week.jsonl")
	if err := os.WriteFile(path, jsonl, 0o600); err != nil {
		t.Fatal(err)
	}
	events, sum := readEvents(t, path, true)
	if sum.Malformed != 0 || len(events) == 0 {
		t.Fatalf("summary %+v, want events and no malformed", sum)
	}
	return events
}

// Ensure the week decodes strictly, spans WeekDays, and holds the cases the accuracy
// evaluation relies on; and that no attack connection is one the week made. (Determinism is
// the generator's, checked by TestDeterministic; the week is large.)
func TestWeek(t *testing.T) {
	raw := generate(t, Week)
	week := weekEvents(t, raw)
	first, last := week[0].Time, week[len(week)-1].Time
	if first.Before(WeekStart) || last.Sub(first) < (WeekDays-1)*24*time.Hour || last.After(WeekStart.Add(WeekDays*24*time.Hour)) {
		t.Errorf("week spans %s to %s, want %d days from %s", first, last, WeekDays, WeekStart)
	}
	tuples := map[string]bool{}
	var versions = map[string]bool{}
	var cron, grpc, uuidPath bool
	for _, ev := range week {
		tuples[edgeKey(ev)] = true
		for _, p := range []flows.Peer{ev.Src, ev.Dst} {
			if p.Namespace == "bookinfo" && strings.Contains(p.Labels.String(), "k8s:app=reviews") {
				versions[p.Labels.String()] = true
			}
			cron = cron || p.Workload == "CronJob/report"
		}
		if ev.L7 != nil && ev.L7.HTTP != nil {
			h := ev.L7.HTTP
			grpc = grpc || strings.HasPrefix(h.Path, "/inventory.v1.Inventory/")
			uuidPath = uuidPath || strings.HasPrefix(h.Path, "/api/users/")
		}
	}
	// The normalizer drops query strings; the generator must still send them.
	query := bytes.Contains(raw, []byte("expand=items"))
	if len(versions) != 4 || !cron || !query || !grpc || !uuidPath {
		t.Errorf("reviews versions %d (want 4), cronjob %t, query strings %t, grpc %t, uuid paths %t", len(versions), cron, query, grpc, uuidPath)
	}
	for _, ev := range weekEvents(t, generate(t, WeekAttacks)) {
		if ev.L7 == nil && tuples[edgeKey(ev)] && !httpCarrier(ev) {
			t.Errorf("attack %s is a connection of the week", edgeKey(ev))
		}
	}
}

// httpCarrier reports whether an attack event is the connection carrying HTTP attack
// requests (web to orders, orders to inventory): those ports are used every day.
func httpCarrier(ev *flows.Event) bool {
	return (ev.Port == 8080 && strings.Contains(ev.Dst.Labels.String(), "app=orders") && strings.Contains(ev.Src.Labels.String(), "app=web")) ||
		(ev.Port == 50051 && strings.Contains(ev.Dst.Labels.String(), "app=inventory"))
}
