package audit_test

import (
	"strings"
	"testing"

	"github.com/recommender/recommender/pkg/audit"
	"github.com/recommender/recommender/pkg/flows"
)

// Ensure the evaluator follows policy-default-local-cluster for peers of another cluster,
// never treats another cluster's workload as a subject, and, without a cluster name, treats
// a single cluster of any name as local (a daemon started without --cluster-name).
func TestEvaluateClusters(t *testing.T) {
	const policies = `apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: web}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
  - fromEndpoints: [{matchLabels: {app: pinned, io.cilium.k8s.policy.cluster: west}}]
  egress:
  - toEntities: [cluster]
`
	d := &audit.Decoded{}
	if err := audit.DecodeYAML(strings.NewReader(policies), "web.yaml", d); err != nil {
		t.Fatal(err)
	}
	wl := func(app, cluster string) flows.Peer {
		ls := []string{"k8s:app=" + app}
		if cluster != "" {
			ls = append(ls, "k8s:io.cilium.k8s.policy.cluster="+cluster)
		}
		return flows.Peer{Kind: flows.PeerWorkload, Namespace: "shop", Labels: flows.NewLabels(ls...)}
	}
	for _, tc := range []struct {
		name            string
		cfg             audit.Config
		src, dst        flows.Peer
		egress, ingress string
	}{
		{"1.19+: a remote client is not selected by a selector without cluster",
			audit.Config{ClusterName: "east"}, wl("client", "west"), wl("web", "east"), "n/a/remote-cluster", "denied/default-deny"},
		{"1.18: a remote client is selected by a selector without cluster",
			audit.Config{ClusterName: "east", PolicyAnyCluster: true}, wl("client", "west"), wl("web", "east"), "n/a/remote-cluster", "allowed/allow-rule"},
		{"a local client is selected under both settings",
			audit.Config{ClusterName: "east", PolicyAnyCluster: true}, wl("client", "east"), wl("web", "east"), "allowed/not-selected", "allowed/allow-rule"},
		{"a selector naming the remote cluster selects its workload",
			audit.Config{ClusterName: "east"}, wl("pinned", "west"), wl("web", "east"), "n/a/remote-cluster", "allowed/allow-rule"},
		{"a selector naming the remote cluster does not select a local twin",
			audit.Config{ClusterName: "east", PolicyAnyCluster: true}, wl("pinned", "east"), wl("web", "east"), "allowed/not-selected", "denied/default-deny"},
		{"the cluster entity is the local cluster only",
			audit.Config{ClusterName: "east"}, wl("web", "east"), wl("db", "west"), "denied/default-deny", "n/a/remote-cluster"},
		{"a remote workload is never a subject",
			audit.Config{ClusterName: "east"}, wl("web", "west"), wl("client", "east"), "n/a/remote-cluster", "allowed/not-selected"},
		{"no cluster name: a single cluster of any name is local",
			audit.Config{}, wl("web", "prod"), wl("db", "prod"), "allowed/allow-rule", "allowed/not-selected"},
		{"no cluster name, flows without the label",
			audit.Config{}, wl("client", ""), wl("web", ""), "allowed/not-selected", "allowed/allow-rule"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			set, err := d.Build(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			v, err := set.Evaluate(&flows.Event{Kind: flows.KindFlow, Src: tc.src, Dst: tc.dst, Proto: flows.ProtoTCP, Port: 80})
			if err != nil {
				t.Fatal(err)
			}
			short := func(d audit.DirectionVerdict) string { return d.Decision.String() + "/" + d.Reason.String() }
			if got := short(v.Egress); got != tc.egress {
				t.Errorf("egress = %s, want %s", got, tc.egress)
			}
			if got := short(v.Ingress); got != tc.ingress {
				t.Errorf("ingress = %s, want %s", got, tc.ingress)
			}
		})
	}
}
