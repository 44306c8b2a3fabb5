package aggregate

import (
	"bytes"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/recommender/recommender/pkg/flows"
)

// Ensure that each kind of malformed record is rejected alone, counted under its reason,
// while the good records of the same batch are committed (issue 15.2, 15.3).
func TestRejectMalformed(t *testing.T) {
	huge := strings.Repeat("x", 1<<20)
	many := make([]string, 10_000)
	for i := range many {
		many[i] = fmt.Sprintf("k8s:l%05d=v", i)
	}
	long := make([]string, 100) // each label and the count are fine, together 9 KiB are not
	for i := range long {
		long[i] = fmt.Sprintf("k8s:l%03d=%s", i, strings.Repeat("v", 80))
	}
	tests := []struct {
		name   string
		ev     *flows.Event
		reason string
	}{
		{"10k labels", flow(1, workload("shop", many...), api, flows.ProtoTCP, 80), rejectIdentity},
		{"1 MB label key", flow(1, workload("shop", "k8s:"+huge+"=v"), api, flows.ProtoTCP, 80), rejectIdentity},
		{"1 MB label value", flow(1, web, workload("shop", "k8s:app="+huge), flows.ProtoTCP, 80), rejectIdentity},
		{"1 MB namespace", flow(1, workload(huge, "k8s:app=web"), api, flows.ProtoTCP, 80), rejectName},
		{"empty namespace", flow(1, workload("", "k8s:app=web"), api, flows.ProtoTCP, 80), rejectName},
		{"identity over 8 KiB", flow(1, web, workload("shop", long...), flows.ProtoTCP, 80), rejectIdentity},
		{"1 MB owner", with(flow(1, web, api, flows.ProtoTCP, 80), func(e *flows.Event) { e.Src.Workload = huge }), rejectName},
		{"1 MB node", with(flow(1, web, api, flows.ProtoTCP, 80), func(e *flows.Event) { e.Node = huge }), rejectName},
		{"empty DNS answer address", dnsResponse(1, web, dns, "api.example.com.", "203.0.113.7", ""), rejectDNS},
		{"DNS answer address not an IP", dnsResponse(1, web, dns, "api.example.com.", "not-an-ip"), rejectDNS},
		{"1 MB DNS query", dnsRequest(1, web, dns, huge), rejectDNS},
		{"1 MB FQDN", flow(1, web, world("203.0.113.7", huge), flows.ProtoTCP, 443), rejectName},
		{"1 MB HTTP path", with(flow(1, web, api, flows.ProtoTCP, 80), func(e *flows.Event) {
			e.Type, e.L7 = flows.EventL7, &flows.L7{HTTP: &flows.HTTP{Method: "GET", Path: "/" + huge}}
		}), rejectHTTP},
		{"empty entity", flow(1, entity(""), web, flows.ProtoTCP, 80), rejectName},
		{"TCP port 0", flow(1, web, api, flows.ProtoTCP, 0), rejectPort},
		{"UDP port 0", flow(1, web, api, flows.ProtoUDP, 0), rejectPort},
		{"ICMP type 300", flow(1, web, api, flows.ProtoICMPv4, 300), rejectPort},
		{"no source and no destination", flow(1, flows.Peer{}, flows.Peer{}, flows.ProtoTCP, 80), rejectEndpoint},
		{"no time", with(flow(1, web, api, flows.ProtoTCP, 80), func(e *flows.Event) { e.Time = time.Time{} }), rejectTime},
		{"the epoch", with(flow(1, web, api, flows.ProtoTCP, 80), func(e *flows.Event) { e.Time = time.Unix(0, 0) }), rejectTime},
		{"dated 1600", with(flow(1, web, api, flows.ProtoTCP, 80), func(e *flows.Event) { e.Time = time.Date(1600, 1, 1, 0, 0, 0, 0, time.UTC) }), rejectTime},
		{"dated 2099", with(flow(1, web, api, flows.ProtoTCP, 80), func(e *flows.Event) { e.Time = time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC) }), rejectFuture},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewPedanticRegistry()
			var logs bytes.Buffer
			a, err := NewAggregator(Config{}, slog.New(slog.NewTextHandler(&logs, nil)), reg)
			if err != nil {
				t.Fatal(err)
			}
			s := openStore(t, "", Options{})
			good := []*flows.Event{flow(1, web, api, flows.ProtoTCP, 8080), flow(2, entity("host"), web, flows.ProtoTCP, 8080)}
			a.Add(good[0])
			if a.Add(tt.ev) {
				t.Fatal("Add accepted the malformed record")
			}
			a.Add(tt.ev) // the second is counted, not logged
			a.Add(good[1])
			if err := s.Commit(a.TakeBatch(), nil); err != nil {
				t.Fatalf("Commit = %v, want the good records committed", err)
			}
			snap, err := s.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			if snap.Flows != 2 || snap.Rejected != 2 || snap.EdgeCount() != 3 {
				t.Errorf("stored flows=%d rejected=%d edges=%d, want 2, 2, 3", snap.Flows, snap.Rejected, snap.EdgeCount())
			}
			if got := gather(t, reg, "recommender_aggregate_rejected_total", "reason", tt.reason); got != 2 {
				t.Errorf("rejected{reason=%q} = %v, want 2", tt.reason, got)
			}
			if n := strings.Count(logs.String(), "malformed record dropped"); n != 1 || logs.Len() > 1024 {
				t.Errorf("log has %d rejection lines, %d bytes; want one short line:\n%.2000s", n, logs.Len(), logs.String())
			}
		})
	}
}

// Ensure that Hubble ports above 65535 are rejected rather than stored wrapped (70000 as
// 4464), through the production path from a recording (issue 15.3).
func TestRejectPortOutOfRange(t *testing.T) {
	var recs []*observerpb.GetFlowsResponse
	for i, port := range []uint32{80, 70000, 65536, 0, 443} {
		recs = append(recs, response(pbFlow{sec: i, node: "n1", uuid: fmt.Sprint(i), srcNS: "shop", dstNS: "shop",
			srcLabels: []string{"k8s:app=web"}, dstLabels: []string{"k8s:app=api"}, srcIP: "10.0.0.1", dstIP: "10.0.0.2",
			sport: 40000 + uint32(i), dport: port}.build()))
	}
	a := newAgg(t, Config{})
	drain(t, fileSource(t, writeJSONPB(t, t.TempDir(), recs)), a)
	snap := a.Snapshot()
	var ports []uint16
	for _, e := range snap.Edges["shop/k8s:app=api"] {
		ports = append(ports, e.Port)
	}
	if fmt.Sprint(ports) != "[80 443]" || snap.Rejected != 3 {
		t.Errorf("stored ports %v, rejected %d; want [80 443] and 3 rejected", ports, snap.Rejected)
	}
}

// Ensure that one flow dated far in the future moves neither the cursor nor the observed
// range: a real recording from the same node ingested afterwards is stored whole (issue 15.4).
func TestFutureFlowKeepsCursor(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, filepath.Join(dir, "store.db"), Options{})
	future := pbFlow{sec: 0, node: "n1", uuid: "future", srcNS: "shop", dstNS: "shop",
		srcLabels: []string{"k8s:app=web"}, dstLabels: []string{"k8s:app=api"}, srcIP: "10.0.0.1", dstIP: "10.0.0.2",
		sport: 39999, dport: 80}.build()
	future.Time.Seconds = time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC).Unix()
	in := newIngester(t, s, IngesterConfig{})
	if err := in.Run(t.Context(), fileSource(t, writeJSONPB(t, filepath.Join(dir), []*observerpb.GetFlowsResponse{response(future)}))); err != nil {
		t.Fatal(err)
	}
	var recs []*observerpb.GetFlowsResponse
	for i := range 161 {
		recs = append(recs, response(pbFlow{sec: i, node: "n1", uuid: fmt.Sprint(i), srcNS: "shop", dstNS: "shop",
			srcLabels: []string{"k8s:app=web"}, dstLabels: []string{"k8s:app=api"}, srcIP: "10.0.0.1", dstIP: "10.0.0.2",
			sport: 40000 + uint32(i), dport: 80, verdict: flowpb.Verdict_FORWARDED}.build()))
	}
	in = newIngester(t, s, IngesterConfig{})
	if err := in.Run(t.Context(), fileSource(t, writeJSONPB(t, t.TempDir(), recs))); err != nil {
		t.Fatal(err)
	}
	if st := in.Stats(); st.Events != 161 || st.Skipped != 0 {
		t.Errorf("second ingest applied %d, skipped %d; want 161 and 0", st.Events, st.Skipped)
	}
	snap, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if snap.Flows != 161 || snap.Rejected != 1 || !snap.To.Equal(at(160)) {
		t.Errorf("store: flows=%d rejected=%d observed to %s; want 161, 1, %s", snap.Flows, snap.Rejected, snap.To, at(160))
	}
}

// Ensure that a lost-events notice whose timestamp is missing (read as the Unix epoch) is
// still counted: it says the observation was incomplete, whatever its time.
func TestLostAtEpochCounted(t *testing.T) {
	a := newAgg(t, Config{})
	if !a.Add(&flows.Event{Kind: flows.KindLost, Time: time.Unix(0, 0), Node: "n1", Lost: &flows.Lost{Count: 7}}) {
		t.Fatal("lost-events notice at the epoch rejected")
	}
	if lost := a.Snapshot().Lost; len(lost) != 1 || lost[0].Lost != 7 {
		t.Errorf("lost = %+v, want 7 on n1", lost)
	}
}
