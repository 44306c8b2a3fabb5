package flowgen

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	observerpb "github.com/cilium/cilium/api/v1/observer"

	"github.com/recommender/recommender/pkg/flows"
)

var update = flag.Bool("update", false, "rewrite testdata/flows from the generator")

const testdataDir = "../../testdata/flows"

func generate(t *testing.T, fn func(Emit) error) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := fn(JSONL(&buf)); err != nil {
		t.Fatalf("generate: %v", err)
	}
	return buf.Bytes()
}

// Ensure the committed recordings are exactly what the generator writes now.
func TestCommittedFilesUpToDate(t *testing.T) {
	for _, f := range Files() {
		t.Run(f.Name, func(t *testing.T) {
			got := generate(t, f.Generate)
			path := filepath.Join(testdataDir, f.Name)
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v; regenerate with: go run ./hack/genflows -out testdata/flows", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("%s is stale (%d bytes committed, generator writes %d); regenerate with: go run ./hack/genflows -out testdata/flows",
					path, len(want), len(got))
			}
			if len(want) > 2<<20 {
				t.Errorf("%s has %d bytes, keep recordings under 2 MiB", path, len(want))
			}
		})
	}
}

// Ensure generation does not depend on anything but the code: two runs, same bytes.
func TestDeterministic(t *testing.T) {
	cfg := smallCluster()
	gens := map[string]func(Emit) error{
		"starwars": Starwars,
		"cluster":  func(e Emit) error { return GenerateCluster(cfg, e) },
	}
	for name, fn := range gens {
		a, b := generate(t, fn), generate(t, fn)
		if !bytes.Equal(a, b) {
			t.Errorf("%s: two runs differ", name)
		}
	}
}

// readEvents reads a recording strictly through the file source and the folder.
func readEvents(t *testing.T, path string, fold bool) ([]*flows.Event, flows.Summary) {
	t.Helper()
	src, err := flows.NewFileSource(flows.FileConfig{Paths: []string{path}, Strict: true}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var s flows.Source = src
	if fold {
		s = flows.NewFolder(src, src.Stats())
	}
	var out []*flows.Event
	for {
		ev, err := s.Recv(t.Context())
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, ev)
	}
	return out, src.Stats().Snapshot()
}

func edgeKey(ev *flows.Event) string {
	return ev.Src.Key() + " -> " + ev.Dst.Key() + " " + ev.PortString()
}

// servicePortsOK are the ports the recorded servers listen on; anything else would be a
// client's ephemeral port taken for a service port.
var servicePortsOK = map[uint16]bool{53: true, 80: true, 443: true, 587: true, 3550: true, 4240: true, 5050: true,
	6379: true, 7000: true, 7070: true, 8080: true, 9555: true, 50051: true}

// Ensure every recording decodes strictly and normalizes into the traffic its README promises.
func TestRecordingsNormalize(t *testing.T) {
	type want struct {
		lost, drops, audit, dnsL7, httpL7 bool
		edges                             []string
	}
	cases := map[string]want{
		"starwars.jsonl": {drops: true, httpL7: true, edges: []string{
			"default/k8s:app.kubernetes.io/name=tiefighter,k8s:class=tiefighter,k8s:io.cilium.k8s.policy.cluster=default,k8s:io.cilium.k8s.policy.serviceaccount=default,k8s:org=empire -> default/k8s:app.kubernetes.io/name=deathstar,k8s:class=deathstar,k8s:io.cilium.k8s.policy.cluster=default,k8s:io.cilium.k8s.policy.serviceaccount=default,k8s:org=empire 80/TCP",
			"entity:health -> entity:health 8/ICMPv4",
			"entity:health -> entity:health 4240/TCP",
		}},
		"boutique.jsonl": {lost: true, drops: true, audit: true, dnsL7: true, httpL7: true, edges: []string{
			"boutique/k8s:app=cartservice,k8s:io.cilium.k8s.policy.cluster=default,k8s:io.cilium.k8s.policy.serviceaccount=cartservice -> boutique/k8s:app=redis-cart,k8s:io.cilium.k8s.policy.cluster=default,k8s:io.cilium.k8s.policy.serviceaccount=redis-cart 6379/TCP",
			"ops/k8s:app.kubernetes.io/name=boutique-operator,k8s:io.cilium.k8s.policy.cluster=default,k8s:io.cilium.k8s.policy.serviceaccount=boutique-operator -> entity:kube-apiserver 443/TCP",
			"ops/k8s:app.kubernetes.io/name=boutique-operator,k8s:io.cilium.k8s.policy.cluster=default,k8s:io.cilium.k8s.policy.serviceaccount=boutique-operator -> world:140.82.121.6 443/TCP",
			"entity:host -> boutique/k8s:app=frontend,k8s:io.cilium.k8s.policy.cluster=default,k8s:io.cilium.k8s.policy.serviceaccount=frontend 8080/TCP",
			"entity:remote-node -> boutique/k8s:app=frontend,k8s:io.cilium.k8s.policy.cluster=default,k8s:io.cilium.k8s.policy.serviceaccount=frontend 8080/TCP",
			"boutique/k8s:app=checkoutservice,k8s:io.cilium.k8s.policy.cluster=default,k8s:io.cilium.k8s.policy.serviceaccount=checkoutservice -> boutique/k8s:app=emailservice,k8s:io.cilium.k8s.policy.cluster=default,k8s:io.cilium.k8s.policy.serviceaccount=emailservice 8080/TCP",
			"boutique/k8s:app=frontend,k8s:io.cilium.k8s.policy.cluster=default,k8s:io.cilium.k8s.policy.serviceaccount=frontend -> kube-system/k8s:io.cilium.k8s.policy.cluster=default,k8s:io.cilium.k8s.policy.serviceaccount=coredns,k8s:k8s-app=kube-dns 53/UDP",
		}},
		"boutique-day2.jsonl":    {dnsL7: true, httpL7: true},
		"boutique-newconn.jsonl": {dnsL7: true, httpL7: true},
	}
	for name, w := range cases {
		t.Run(name, func(t *testing.T) {
			events, sum := readEvents(t, filepath.Join(testdataDir, name), false)
			if sum.Malformed != 0 || len(events) == 0 {
				t.Fatalf("summary %+v, want events and no malformed", sum)
			}
			var lost, drops, audit, dnsL7, httpL7 bool
			edges := map[string]bool{}
			for _, ev := range events {
				if ev.Kind == flows.KindLost {
					lost = true
					continue
				}
				if ev.Reply {
					t.Errorf("reply delivered: %+v", ev)
				}
				if !ev.Proto.IsICMP() && !servicePortsOK[ev.Port] {
					t.Errorf("port %d is no service port of the scenario: %s", ev.Port, edgeKey(ev))
				}
				if ev.Src.Kind == flows.PeerWorkload && strings.Contains(ev.Src.Labels.String(), "pod-template-hash") {
					t.Errorf("churny label kept: %s", ev.Src.Labels)
				}
				if ev.Dst.Kind == flows.PeerWorld && len(ev.Dst.Names) == 0 && ev.Dst.IP != "" {
					t.Errorf("world peer without DNS name: %s", edgeKey(ev))
				}
				drops = drops || (ev.Verdict == flows.VerdictDropped && flows.IsPolicyDrop(ev.DropReason))
				audit = audit || ev.Verdict == flows.VerdictAudit
				dnsL7 = dnsL7 || (ev.L7 != nil && ev.L7.DNS != nil && ev.L7.DNS.Response && len(ev.L7.DNS.IPs) > 0)
				httpL7 = httpL7 || (ev.L7 != nil && ev.L7.HTTP != nil)
				edges[edgeKey(ev)] = true
			}
			got := want{lost: lost, drops: drops, audit: audit, dnsL7: dnsL7, httpL7: httpL7}
			if got.lost != w.lost || got.drops != w.drops || got.audit != w.audit || got.dnsL7 != w.dnsL7 || got.httpL7 != w.httpL7 {
				t.Errorf("lost, drops, audit, dns, http = %v %v %v %v %v, want %v %v %v %v %v",
					got.lost, got.drops, got.audit, got.dnsL7, got.httpL7, w.lost, w.drops, w.audit, w.dnsL7, w.httpL7)
			}
			for _, e := range w.edges {
				if !edges[e] {
					t.Errorf("edge %q missing; have:\n%s", e, strings.Join(slices.Sorted(maps.Keys(edges)), "\n"))
				}
			}
		})
	}
}

// Ensure the audit lifecycle files hold what issue 6's end-to-end test relies on: day 2 only
// known edges, newconn exactly one new connection, both later than day 1, neither with lost
// events or drops.
func TestBoutiqueLifecycleFiles(t *testing.T) {
	day1, _ := readEvents(t, filepath.Join(testdataDir, "boutique.jsonl"), true)
	known := map[string]bool{}
	var last time.Time
	for _, ev := range day1 {
		if ev.Kind == flows.KindFlow {
			known[edgeKey(ev)] = true
		}
		if ev.Time.After(last) {
			last = ev.Time
		}
	}
	for _, name := range []string{"boutique-day2.jsonl", "boutique-newconn.jsonl"} {
		events, _ := readEvents(t, filepath.Join(testdataDir, name), true)
		newEdges := map[string]int{}
		for _, ev := range events {
			if !ev.Time.After(last) {
				t.Fatalf("%s: event at %v, not after day one's last %v", name, ev.Time, last)
			}
			if ev.Kind == flows.KindLost || ev.Verdict == flows.VerdictDropped || ev.Verdict == flows.VerdictAudit {
				t.Errorf("%s: unexpected %v %v event", name, ev.Kind, ev.Verdict)
			}
			if k := edgeKey(ev); !known[k] {
				newEdges[k]++
			}
		}
		want := map[string]int{}
		if name == "boutique-newconn.jsonl" {
			want["boutique/k8s:app=recommendationservice,k8s:io.cilium.k8s.policy.cluster=default,k8s:io.cilium.k8s.policy.serviceaccount=recommendationservice -> entity:kube-apiserver 443/TCP"] = 1
		}
		if len(newEdges) != len(want) {
			t.Errorf("%s: new edges %v, want %v", name, newEdges, want)
		}
		for k, n := range want {
			if newEdges[k] != n {
				t.Errorf("%s: new edges %v, want %v", name, newEdges, want)
			}
		}
	}
}

func smallCluster() ClusterConfig {
	cfg := DefaultClusterConfig()
	cfg.Nodes, cfg.Namespaces, cfg.Workloads, cfg.Flows = 3, 3, 5, 3000
	cfg.DropShare, cfg.ExternalShare, cfg.DNSShare = 0.05, 0.1, 0.3
	return cfg
}

// Ensure the synthetic cluster emits exactly the requested records, with replica churn
// that label filtering folds back into the configured workloads.
func TestGenerateCluster(t *testing.T) {
	cfg := smallCluster()
	var recs []*observerpb.GetFlowsResponse
	if err := GenerateCluster(cfg, func(r *observerpb.GetFlowsResponse) error { recs = append(recs, r); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(recs) != cfg.Flows {
		t.Fatalf("GenerateCluster emitted %d records, want %d", len(recs), cfg.Flows)
	}
	norm := flows.NewNormalizer(nil)
	workloads, hashes := map[string]bool{}, map[string]bool{}
	var drops, dns, world int
	for i, r := range recs {
		if i > 0 && r.GetTime().AsTime().Before(recs[i-1].GetTime().AsTime()) {
			t.Fatalf("record %d goes back in time", i)
		}
		for _, l := range r.GetFlow().GetSource().GetLabels() {
			if strings.HasPrefix(l, "k8s:pod-template-hash=") {
				hashes[l] = true
			}
		}
		ev, skip := norm.Response(r)
		if skip != flows.SkipNone {
			continue
		}
		for _, p := range []flows.Peer{ev.Src, ev.Dst} {
			if p.Kind == flows.PeerWorkload {
				workloads[p.Key()] = true
			}
		}
		if ev.Verdict == flows.VerdictDropped {
			drops++
		}
		if ev.L7 != nil && ev.L7.DNS != nil {
			dns++
		}
		if ev.Dst.Kind == flows.PeerWorld {
			world++
		}
	}
	if want := cfg.Namespaces*cfg.Workloads + 1; len(workloads) != want { // + coredns
		t.Errorf("%d distinct workloads after label filtering, want %d", len(workloads), want)
	}
	if min := (cfg.Rollouts + 1) * cfg.Namespaces * cfg.Workloads; len(hashes) < min {
		t.Errorf("%d pod-template-hash values, want at least %d (rollouts)", len(hashes), min)
	}
	if drops == 0 || dns == 0 || world == 0 {
		t.Errorf("drops %d, dns %d, world %d: want all present", drops, dns, world)
	}
}

// Ensure the iterator form stops when the consumer does and rejects bad configs.
func TestClusterRecords(t *testing.T) {
	cfg := smallCluster()
	seq, err := ClusterRecords(cfg)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for range seq {
		n++
		if n == 10 {
			break
		}
	}
	if n != 10 {
		t.Errorf("got %d records, want 10", n)
	}
	bad := cfg
	bad.Nodes, bad.DropShare = 0, 2
	if _, err := ClusterRecords(bad); err == nil || !strings.Contains(err.Error(), "nodes") || !strings.Contains(err.Error(), "shares") {
		t.Errorf("ClusterRecords(bad) error = %v, want nodes and shares complaints", err)
	}
}

func BenchmarkGenerateCluster(b *testing.B) {
	cfg := DefaultClusterConfig()
	cfg.Flows = b.N
	b.ReportAllocs()
	if err := GenerateCluster(cfg, JSONL(io.Discard)); err != nil {
		b.Fatal(err)
	}
}
