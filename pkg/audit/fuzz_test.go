package audit_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/recommender/recommender/internal/realdata"
	"github.com/recommender/recommender/pkg/audit"
	"github.com/recommender/recommender/pkg/flows"
)

// FuzzPolicies decodes arbitrary policy files, builds them into a set and evaluates a fixed
// mix of flows against it: policies in a cluster are written by others, and `check` and the
// daemon's audit read them as they are. Decoding and building may refuse a document, with an
// error; neither may panic, and a set built from whatever was accepted must evaluate every
// well-formed flow. Seeded with the policies the project writes (pkg/synth's golden files),
// those of cmd/recommender's tests, and ../shared/realdata's policies when present.
func FuzzPolicies(f *testing.F) {
	var seeds []string
	for _, pattern := range []string{"../synth/testdata/*.golden", "../../cmd/recommender/testdata/*/*/*.yaml"} {
		m, _ := filepath.Glob(pattern)
		seeds = append(seeds, m...)
	}
	if dir := realdata.Dir("policies"); dir != "" {
		m, _ := filepath.Glob(filepath.Join(dir, "*", "*.yaml"))
		seeds = append(seeds, m...)
	}
	if len(seeds) == 0 {
		f.Fatal("no seed policies found")
	}
	for _, p := range seeds {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	events := fuzzEvents()
	f.Fuzz(func(t *testing.T, data []byte) {
		d := &audit.Decoded{}
		_ = audit.DecodeYAML(bytes.NewReader(data), "fuzz.yaml", d) // a refused document is listed, not fatal
		for _, cfg := range []audit.Config{{}, {ClusterName: "east"}, {ClusterName: "east", PolicyAnyCluster: true}} {
			set, _ := d.Build(cfg) // invalid policies are left out of the set
			if set == nil {
				t.Fatalf("Build(%+v) returned no set", cfg)
			}
			for i, ev := range events {
				if _, err := set.Evaluate(ev); err != nil {
					t.Fatalf("Evaluate(event %d) with %+v: %v", i, cfg, err)
				}
			}
		}
	})
}

// fuzzEvents are well-formed flows of every kind the evaluator tells apart: pod to pod (local
// and remote cluster), to and from the world by IP and by name, to an entity, DNS and HTTP
// requests, ICMP.
func fuzzEvents() []*flows.Event {
	t := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	pod := func(ns, app, cluster string) flows.Peer {
		ls := []string{"k8s:app=" + app, "k8s:io.kubernetes.pod.namespace=" + ns}
		if cluster != "" {
			ls = append(ls, "k8s:io.cilium.k8s.policy.cluster="+cluster)
		}
		return flows.Peer{Kind: flows.PeerWorkload, Namespace: ns, Labels: flows.NewLabels(ls...)}
	}
	web, api := pod("default", "web", "east"), pod("default", "api", "east")
	remote := pod("default", "client", "west")
	world := flows.Peer{Kind: flows.PeerWorld, IP: "203.0.113.7", Names: []string{"api.example.com"}}
	bare := flows.Peer{Kind: flows.PeerWorld, IP: "2001:db8::7"}
	host := flows.Peer{Kind: flows.PeerEntity, Entity: "host"}
	ev := func(src, dst flows.Peer, proto flows.Protocol, port uint16) *flows.Event {
		return &flows.Event{Kind: flows.KindFlow, Time: t, Src: src, Dst: dst, Proto: proto, Port: port, Verdict: flows.VerdictForwarded}
	}
	dns := ev(web, pod("kube-system", "kube-dns", "east"), flows.ProtoUDP, 53)
	dns.Type, dns.L7 = flows.EventL7, &flows.L7{DNS: &flows.DNS{Query: "api.example.com."}}
	http := ev(web, api, flows.ProtoTCP, 8080)
	http.Type, http.L7 = flows.EventL7, &flows.L7{HTTP: &flows.HTTP{Method: "GET", Path: "/v1/items"}}
	return []*flows.Event{
		ev(web, api, flows.ProtoTCP, 80),
		ev(remote, web, flows.ProtoTCP, 80),
		ev(web, world, flows.ProtoTCP, 443),
		ev(bare, web, flows.ProtoTCP, 8443),
		ev(web, host, flows.ProtoUDP, 10250),
		ev(api, web, flows.ProtoICMPv4, 8),
		dns,
		http,
	}
}
