package flows_test

import (
	"testing"

	"github.com/recommender/recommender/pkg/flows"
	"github.com/recommender/recommender/pkg/replay"
)

// Ensure a sharded relay source (--namespace, --node-name) receives exactly the flows from or
// to its namespaces observed on its nodes, filtered by the relay.
func TestRelayShard(t *testing.T) {
	const path = "../../testdata/flows/boutique.jsonl"
	rec, _, err := replay.Load(t.Context(), []string{path}, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, addr := serve(t, rec, replay.Options{}, "127.0.0.1:0")
	fsrc, err := flows.NewFileSource(flows.FileConfig{Paths: []string{path}, Strict: true}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	all := readN(t, t.Context(), fsrc, -1)
	var node string
	for _, ev := range all {
		if ev.Kind == flows.KindFlow && ev.Node != "" {
			node = ev.Node
			break
		}
	}
	tests := []struct {
		name       string
		namespaces []string
		nodes      []string
		keep       func(*flows.Event) bool
	}{
		{"namespace", []string{"ops"}, nil, func(ev *flows.Event) bool {
			return ev.Src.Namespace == "ops" || ev.Dst.Namespace == "ops"
		}},
		{"namespace and node", []string{"kube-system"}, []string{node}, func(ev *flows.Event) bool {
			return (ev.Src.Namespace == "kube-system" || ev.Dst.Namespace == "kube-system") && ev.Node == node
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testRelayConfig(addr)
			cfg.Namespaces, cfg.Nodes = tt.namespaces, tt.nodes
			got := readN(t, t.Context(), newRelay(t, cfg, nil), -1)
			var want []*flows.Event
			for _, ev := range all {
				// Lost-events notices pass every filter, as in Hubble.
				if ev.Kind == flows.KindLost || tt.keep(ev) {
					want = append(want, ev)
				}
			}
			if len(want) == len(all) || len(want) == 0 {
				t.Fatalf("shard keeps %d of %d events: the case does not test filtering", len(want), len(all))
			}
			sameEvents(t, got, want)
		})
	}
}
