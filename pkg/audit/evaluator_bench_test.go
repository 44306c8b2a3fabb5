package audit

import (
	"fmt"
	"strconv"
	"testing"

	ciliumv2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"
	slim_metav1 "github.com/cilium/cilium/pkg/k8s/slim/k8s/apis/meta/v1"
	"github.com/cilium/cilium/pkg/policy/api"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/recommender/recommender/pkg/flows"
)

// benchSet builds n per-workload CCNPs as pkg/synth writes them: workload i in namespace
// ns<i%50> may be reached by workload i-1 on 8080 and may reach workload i+1 on 8080 and DNS.
func benchSet(b *testing.B, n int) *PolicySet {
	b.Helper()
	s := NewPolicySet(Config{})
	sel := func(i int) api.EndpointSelector {
		return api.NewESFromK8sLabelSelector("", &slim_metav1.LabelSelector{MatchLabels: map[string]string{
			"k8s:io.kubernetes.pod.namespace": "ns" + strconv.Itoa(i%50),
			"k8s:app":                         "app" + strconv.Itoa(i),
		}})
	}
	dns := api.NewESFromK8sLabelSelector("", &slim_metav1.LabelSelector{MatchLabels: map[string]string{
		"k8s:io.kubernetes.pod.namespace": "kube-system", "k8s:k8s-app": "kube-dns",
	}})
	port := func(p string) []api.PortRule {
		return []api.PortRule{{Ports: []api.PortProtocol{{Port: p, Protocol: api.ProtoTCP}}}}
	}
	for i := range n {
		p := &ciliumv2.CiliumClusterwideNetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: "app" + strconv.Itoa(i)},
			Spec: &api.Rule{
				EndpointSelector: sel(i),
				Ingress:          []api.IngressRule{{IngressCommonRule: api.IngressCommonRule{FromEndpoints: []api.EndpointSelector{sel(i + n - 1)}}, ToPorts: port("8080")}},
				Egress: []api.EgressRule{
					{EgressCommonRule: api.EgressCommonRule{ToEndpoints: []api.EndpointSelector{sel(i + 1)}}, ToPorts: port("8080")},
					{EgressCommonRule: api.EgressCommonRule{ToEndpoints: []api.EndpointSelector{dns}}, ToPorts: []api.PortRule{{
						Ports: []api.PortProtocol{{Port: "53", Protocol: api.ProtoAny}},
						Rules: &api.L7Rules{DNS: []api.PortRuleDNS{{MatchPattern: "*"}}},
					}}},
				},
			},
		}
		if err := s.AddCCNP(p); err != nil {
			b.Fatal(err)
		}
	}
	return s
}

// benchEvents are flows between neighbouring workloads, half allowed and half denied, over
// 1000 distinct workloads so the endpoint cache holds many entries.
func benchEvents(n int) []*flows.Event {
	var evs []*flows.Event
	w := func(i int) flows.Peer {
		i %= n
		return flows.Peer{Kind: flows.PeerWorkload, Namespace: "ns" + strconv.Itoa(i%50), Labels: flows.NewLabels("k8s:app=app" + strconv.Itoa(i))}
	}
	for i := range min(n, 1000) {
		evs = append(evs,
			&flows.Event{Kind: flows.KindFlow, Src: w(i), Dst: w(i + 1), Proto: flows.ProtoTCP, Port: 8080},
			&flows.Event{Kind: flows.KindFlow, Src: w(i), Dst: w(i + 2), Proto: flows.ProtoTCP, Port: 8080},
		)
	}
	return evs
}

// BenchmarkEvaluate measures flows evaluated per second with 1k and 10k policies loaded, after
// the per-endpoint cache is warm (the steady state of the daemon).
func BenchmarkEvaluate(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("policies=%d", n), func(b *testing.B) {
			s := benchSet(b, n)
			evs := benchEvents(n)
			for _, ev := range evs {
				if _, err := s.Evaluate(ev); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			i := 0
			for b.Loop() {
				if _, err := s.Evaluate(evs[i%len(evs)]); err != nil {
					b.Fatal(err)
				}
				i++
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "flows/s")
		})
	}
}

// BenchmarkEvaluateCold measures the first flow of each new workload: the index lookup that
// picks the selecting policies out of 10k.
func BenchmarkEvaluateCold(b *testing.B) {
	s := benchSet(b, 10000)
	evs := benchEvents(10000)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i%len(evs) == 0 {
			b.StopTimer()
			s = benchSet(b, 10000)
			b.StartTimer()
		}
		if _, err := s.Evaluate(evs[i%len(evs)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
