package audit

import (
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/recommender/recommender/pkg/flows"
)

// buildSet compiles YAML policies; any invalid policy or unexpected warning fails the test.
func buildSet(t testing.TB, cfg Config, docs string) *PolicySet {
	t.Helper()
	d := &Decoded{}
	if err := DecodeYAML(strings.NewReader(docs), "test.yaml", d); err != nil {
		t.Fatalf("DecodeYAML: %v", err)
	}
	s, err := d.Build(cfg)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	return s
}

func wl(ns string, lbls ...string) flows.Peer {
	for i, l := range lbls {
		lbls[i] = "k8s:" + l
	}
	return flows.Peer{Kind: flows.PeerWorkload, Namespace: ns, Labels: flows.NewLabels(lbls...)}
}

func entity(name string) flows.Peer { return flows.Peer{Kind: flows.PeerEntity, Entity: name} }

func world(ip string, names ...string) flows.Peer {
	return flows.Peer{Kind: flows.PeerWorld, Entity: "world", IP: ip, Names: names}
}

func tcp(src, dst flows.Peer, port uint16) *flows.Event {
	return &flows.Event{Kind: flows.KindFlow, Src: src, Dst: dst, Proto: flows.ProtoTCP, Port: port}
}

func udp(src, dst flows.Peer, port uint16) *flows.Event {
	ev := tcp(src, dst, port)
	ev.Proto = flows.ProtoUDP
	return ev
}

func withHTTP(ev *flows.Event, method, path string) *flows.Event {
	ev.L7 = &flows.L7{HTTP: &flows.HTTP{Method: method, Path: path, Host: "web"}}
	return ev
}

func withDNS(ev *flows.Event, query string) *flows.Event {
	ev.L7 = &flows.L7{DNS: &flows.DNS{Query: query}}
	return ev
}

var (
	web      = wl("shop", "app=web")
	frontend = wl("shop", "app=frontend")
	db       = wl("shop", "app=db")
	otherDB  = wl("billing", "app=db")
	kubeDNS  = wl("kube-system", "k8s-app=kube-dns")
)

// want is a compact expectation for one direction: "decision/reason[/rule]".
func got(d DirectionVerdict) string {
	s := d.Decision.String() + "/" + d.Reason.String()
	if d.Rule != nil {
		s += "/" + d.Rule.String()
	}
	return s
}

const webPolicy = `
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata:
  name: web
spec:
  endpointSelector:
    matchLabels:
      k8s:io.kubernetes.pod.namespace: shop
      app: web
  ingress:
  - fromEndpoints:
    - matchLabels:
        k8s:io.kubernetes.pod.namespace: shop
        app: frontend
    toPorts:
    - ports:
      - port: "8080"
        protocol: TCP
  egress:
  - toEndpoints:
    - matchLabels:
        k8s:io.kubernetes.pod.namespace: shop
        app: db
    toPorts:
    - ports:
      - port: "5432"
        protocol: TCP
`

// Ensure each policy construct gives Cilium's verdict, with the deciding rule named.
func TestEvaluate(t *testing.T) {
	tests := []struct {
		name        string
		cfg         Config
		policies    string
		ev          *flows.Event
		egress      string
		ingress     string
		wantWarning string
	}{
		{
			name: "no policy selects either end", policies: ``,
			ev:     tcp(frontend, web, 8080),
			egress: "allowed/not-selected", ingress: "allowed/not-selected",
		},
		{
			name: "matchLabels peer and port allowed", policies: webPolicy,
			ev:     tcp(frontend, web, 8080),
			egress: "allowed/not-selected", ingress: "allowed/allow-rule/CiliumClusterwideNetworkPolicy/web ingress[0]",
		},
		{
			name: "wrong port is default denied", policies: webPolicy,
			ev:     tcp(frontend, web, 9090),
			egress: "allowed/not-selected", ingress: "denied/default-deny",
		},
		{
			name: "wrong protocol is default denied", policies: webPolicy,
			ev:     udp(frontend, web, 8080),
			egress: "allowed/not-selected", ingress: "denied/default-deny",
		},
		{
			name: "peer in another namespace is denied", policies: webPolicy,
			ev:     tcp(web, otherDB, 5432),
			egress: "denied/default-deny", ingress: "allowed/not-selected",
		},
		{
			name: "egress allowed", policies: webPolicy,
			ev:     tcp(web, db, 5432),
			egress: "allowed/allow-rule/CiliumClusterwideNetworkPolicy/web egress[0]", ingress: "allowed/not-selected",
		},
		{
			name: "entity peer is not a subject", policies: webPolicy,
			ev:     tcp(web, entity("kube-apiserver"), 443),
			egress: "denied/default-deny", ingress: "n/a/not-workload",
		},
		{
			name: "host reaches local endpoint despite default deny", policies: webPolicy,
			ev:     tcp(entity("host"), web, 9999),
			egress: "n/a/not-workload", ingress: "allowed/localhost",
		},
		{
			name: "allow-localhost policy makes host need a rule", policies: webPolicy,
			cfg:    Config{AllowLocalhost: AllowLocalhostPolicy},
			ev:     tcp(entity("host"), web, 9999),
			egress: "n/a/not-workload", ingress: "denied/default-deny",
		},
		{
			name: "remote-node is not localhost", policies: webPolicy,
			ev:     tcp(entity("remote-node"), web, 8080),
			egress: "n/a/not-workload", ingress: "denied/default-deny",
		},
		{
			name: "CNP selectors are scoped to the policy namespace",
			policies: `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: db, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: db}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: web}}]
`,
			ev:     tcp(web, db, 5432),
			egress: "allowed/not-selected", ingress: "allowed/allow-rule/CiliumNetworkPolicy/shop/db ingress[0]",
		},
		{
			name: "CNP does not select pods of another namespace",
			policies: `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: db, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: db}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: web}}]
`,
			ev:     tcp(wl("billing", "app=web"), otherDB, 5432),
			egress: "allowed/not-selected", ingress: "allowed/not-selected",
		},
		{
			name: "CNP peer from another namespace needs the namespace label",
			policies: `
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: db, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: db}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: web}}]
`,
			ev:     tcp(wl("billing", "app=web"), db, 5432),
			egress: "allowed/not-selected", ingress: "denied/default-deny",
		},
		{
			name: "matchExpressions In and namespace-name label",
			policies: `
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: db}
spec:
  endpointSelector:
    matchExpressions:
    - {key: app, operator: In, values: [db, cache]}
  ingress:
  - fromEndpoints:
    - matchLabels:
        k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name: shop
`,
			ev:     tcp(web, otherDB, 5432),
			egress: "allowed/not-selected", ingress: "allowed/allow-rule/CiliumClusterwideNetworkPolicy/db ingress[0]",
		},
		{
			name: "matchExpressions NotIn excludes",
			policies: `
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: db}
spec:
  endpointSelector: {matchLabels: {app: db}}
  ingress:
  - fromEndpoints:
    - matchExpressions:
      - {key: app, operator: NotIn, values: [web]}
`,
			ev:     tcp(web, db, 5432),
			egress: "allowed/not-selected", ingress: "denied/default-deny",
		},
		{
			name: "port range with endPort",
			policies: `
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: db}
spec:
  endpointSelector: {matchLabels: {app: db}}
  ingress:
  - toPorts: [{ports: [{port: "5000", endPort: 5500, protocol: TCP}]}]
`,
			ev:     tcp(web, db, 5432),
			egress: "allowed/not-selected", ingress: "allowed/allow-rule/CiliumClusterwideNetworkPolicy/db ingress[0]",
		},
		{
			name: "port above range",
			policies: `
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: db}
spec:
  endpointSelector: {matchLabels: {app: db}}
  ingress:
  - toPorts: [{ports: [{port: "5000", endPort: 5400, protocol: TCP}]}]
`,
			ev:     tcp(web, db, 5432),
			egress: "allowed/not-selected", ingress: "denied/default-deny",
		},
		{
			name: "protocol ANY covers UDP",
			policies: `
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: db}
spec:
  endpointSelector: {matchLabels: {app: db}}
  ingress:
  - toPorts: [{ports: [{port: "5432", protocol: ANY}]}]
`,
			ev:     udp(web, db, 5432),
			egress: "allowed/not-selected", ingress: "allowed/allow-rule/CiliumClusterwideNetworkPolicy/db ingress[0]",
		},
		{
			name: "named port is unknown, not denied",
			policies: `
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: db}
spec:
  endpointSelector: {matchLabels: {app: db}}
  ingress:
  - toPorts: [{ports: [{port: postgres, protocol: TCP}]}]
`,
			ev:     tcp(web, db, 5432),
			egress: "allowed/not-selected", ingress: "unknown/unresolved",
			wantWarning: `named port "postgres"`,
		},
		{
			name: "union of two policies selecting the endpoint",
			policies: webPolicy + `---
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: web-metrics}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEntities: [remote-node]
    toPorts: [{ports: [{port: "9090", protocol: TCP}]}]
`,
			ev:     tcp(entity("remote-node"), web, 9090),
			egress: "n/a/not-workload", ingress: "allowed/allow-rule/CiliumClusterwideNetworkPolicy/web-metrics ingress[0]",
		},
		{
			name: "enableDefaultDeny false makes a policy additive",
			policies: `
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: web}
spec:
  endpointSelector: {matchLabels: {app: web}}
  enableDefaultDeny: {ingress: false}
  ingress:
  - fromEndpoints: [{matchLabels: {app: frontend}}]
`,
			ev:     tcp(db, web, 8080),
			egress: "allowed/not-selected", ingress: "allowed/default-allow",
		},
		{
			name: "one default-deny policy wins over an additive one",
			policies: webPolicy + `---
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: additive}
spec:
  endpointSelector: {matchLabels: {app: web}}
  enableDefaultDeny: {ingress: false}
  ingress:
  - fromEndpoints: [{matchLabels: {app: db}}]
    toPorts: [{ports: [{port: "1", protocol: TCP}]}]
`,
			ev:     tcp(db, web, 8080),
			egress: "allowed/not-selected", ingress: "denied/default-deny",
		},
		{
			name: "egress-only policy leaves ingress open",
			policies: `
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: web}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
  - toEndpoints: [{matchLabels: {app: db}}]
`,
			ev:     tcp(frontend, web, 8080),
			egress: "allowed/not-selected", ingress: "allowed/not-selected",
		},
		{
			name: "empty ingress rule denies all ingress",
			policies: `
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: lockdown}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress: [{}]
`,
			ev:     tcp(frontend, web, 8080),
			egress: "allowed/not-selected", ingress: "denied/default-deny",
		},
		{
			name: "ingressDeny wins over allow",
			policies: webPolicy + `---
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: deny-frontend}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingressDeny:
  - fromEndpoints: [{matchLabels: {app: frontend}}]
`,
			ev:     tcp(frontend, web, 8080),
			egress: "allowed/not-selected", ingress: "denied/deny-rule/CiliumClusterwideNetworkPolicy/deny-frontend ingressDeny[0]",
		},
		{
			name: "egressDeny on a port wins over an additive allow-all",
			policies: `
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: no-smtp}
spec:
  endpointSelector: {}
  enableDefaultDeny: {egress: false}
  egressDeny:
  - toEntities: [world]
    toPorts: [{ports: [{port: "25", protocol: TCP}]}]
`,
			ev:     tcp(web, world("198.51.100.7"), 25),
			egress: "denied/deny-rule/CiliumClusterwideNetworkPolicy/no-smtp egressDeny[0]", ingress: "n/a/not-workload",
		},
		{
			name: "deny rule also beats localhost",
			policies: `
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: no-host}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingressDeny:
  - fromEntities: [host]
`,
			ev:     tcp(entity("host"), web, 8080),
			egress: "n/a/not-workload", ingress: "denied/deny-rule/CiliumClusterwideNetworkPolicy/no-host ingressDeny[0]",
		},
		{
			name: "toEntities world",
			policies: `
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: web}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
  - toEntities: [world]
    toPorts: [{ports: [{port: "443", protocol: TCP}]}]
`,
			ev:     tcp(web, world("203.0.113.9"), 443),
			egress: "allowed/allow-rule/CiliumClusterwideNetworkPolicy/web egress[0]", ingress: "n/a/not-workload",
		},
		{
			name: "toEntities world does not cover pods",
			policies: `
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: web}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
  - toEntities: [world]
`,
			ev:     tcp(web, db, 5432),
			egress: "denied/default-deny", ingress: "allowed/not-selected",
		},
		{
			name: "toEntities cluster covers pods and nodes",
			policies: `
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: web}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
  - toEntities: [cluster]
`,
			ev:     tcp(web, otherDB, 5432),
			egress: "allowed/allow-rule/CiliumClusterwideNetworkPolicy/web egress[0]", ingress: "allowed/not-selected",
		},
		{
			name: "toEntities cluster covers remote-node",
			policies: `
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: web}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
  - toEntities: [cluster]
`,
			ev:     tcp(web, entity("remote-node"), 10250),
			egress: "allowed/allow-rule/CiliumClusterwideNetworkPolicy/web egress[0]", ingress: "n/a/not-workload",
		},
		{
			name: "toEntities cluster excludes world",
			policies: `
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: web}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
  - toEntities: [cluster]
`,
			ev:     tcp(web, world("203.0.113.9"), 443),
			egress: "denied/default-deny", ingress: "n/a/not-workload",
		},
		{
			name: "toEntities all covers world",
			policies: `
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: web}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
  - toEntities: [all]
`,
			ev:     tcp(web, world("203.0.113.9"), 443),
			egress: "allowed/allow-rule/CiliumClusterwideNetworkPolicy/web egress[0]", ingress: "n/a/not-workload",
		},
		{
			name: "toEntities kube-apiserver",
			policies: `
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: web}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
  - toEntities: [kube-apiserver]
`,
			ev:     tcp(web, entity("kube-apiserver"), 6443),
			egress: "allowed/allow-rule/CiliumClusterwideNetworkPolicy/web egress[0]", ingress: "n/a/not-workload",
		},
		{
			name: "toCIDR contains the address",
			policies: `
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: web}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
  - toCIDR: [10.20.0.0/16]
`,
			ev:     tcp(web, world("10.20.3.4"), 443),
			egress: "allowed/allow-rule/CiliumClusterwideNetworkPolicy/web egress[0]", ingress: "n/a/not-workload",
		},
		{
			name: "toCIDRSet except carves out",
			policies: `
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: web}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
  - toCIDRSet: [{cidr: 10.0.0.0/8, except: [10.20.0.0/16]}]
`,
			ev:     tcp(web, world("10.20.3.4"), 443),
			egress: "denied/default-deny", ingress: "n/a/not-workload",
		},
		{
			name: "toCIDRSet outside except",
			policies: `
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: web}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
  - toCIDRSet: [{cidr: 10.0.0.0/8, except: [10.20.0.0/16]}]
`,
			ev:     tcp(web, world("10.30.3.4"), 443),
			egress: "allowed/allow-rule/CiliumClusterwideNetworkPolicy/web egress[0]", ingress: "n/a/not-workload",
		},
		{
			name: "IPv6 CIDR",
			policies: `
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: web}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
  - toCIDR: ["2001:db8::/32"]
`,
			ev:     tcp(web, world("2001:db8::1"), 443),
			egress: "allowed/allow-rule/CiliumClusterwideNetworkPolicy/web egress[0]", ingress: "n/a/not-workload",
		},
		{
			name: "fromCIDR on ingress",
			policies: `
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: web}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromCIDR: [192.0.2.0/24]
`,
			ev:     tcp(world("192.0.2.10"), web, 8080),
			egress: "n/a/not-workload", ingress: "allowed/allow-rule/CiliumClusterwideNetworkPolicy/web ingress[0]",
		},
		{
			name: "toFQDNs matchName against Hubble's names",
			policies: `
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: web}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
  - toFQDNs: [{matchName: api.example.com}]
    toPorts: [{ports: [{port: "443", protocol: TCP}]}]
`,
			ev:     tcp(web, world("203.0.113.9", "api.example.com"), 443),
			egress: "allowed/allow-rule/CiliumClusterwideNetworkPolicy/web egress[0]", ingress: "n/a/not-workload",
		},
		{
			name: "toFQDNs matchPattern",
			policies: `
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: web}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
  - toFQDNs: [{matchPattern: "*.example.com"}]
`,
			ev:     tcp(web, world("203.0.113.9", "cdn.example.com"), 443),
			egress: "allowed/allow-rule/CiliumClusterwideNetworkPolicy/web egress[0]", ingress: "n/a/not-workload",
		},
		{
			name: "toFQDNs other name denied",
			policies: `
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: web}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
  - toFQDNs: [{matchPattern: "*.example.com"}]
`,
			ev:     tcp(web, world("203.0.113.9", "example.org"), 443),
			egress: "denied/default-deny", ingress: "n/a/not-workload",
		},
		{
			name: "toFQDNs without names on the flow denied",
			policies: `
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: web}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
  - toFQDNs: [{matchName: api.example.com}]
`,
			ev:     tcp(web, world("203.0.113.9"), 443),
			egress: "denied/default-deny", ingress: "n/a/not-workload",
		},
		{
			name:     "DNS rule allows a matching query",
			policies: dnsPolicy,
			ev:       withDNS(udp(web, kubeDNS, 53), "api.example.com."),
			egress:   "allowed/allow-rule/CiliumClusterwideNetworkPolicy/web-dns egress[0]", ingress: "allowed/not-selected",
		},
		{
			name:     "DNS rule refuses another query",
			policies: dnsPolicy,
			ev:       withDNS(udp(web, kubeDNS, 53), "evil.example.org."),
			egress:   "denied/l7-denied/CiliumClusterwideNetworkPolicy/web-dns egress[0]", ingress: "allowed/not-selected",
		},
		{
			name:     "DNS port L4 flow passes to the proxy",
			policies: dnsPolicy,
			ev:       udp(web, kubeDNS, 53),
			egress:   "allowed/allow-rule/CiliumClusterwideNetworkPolicy/web-dns egress[0]", ingress: "allowed/not-selected",
		},
		{
			name:     "HTTP rule allows method and path",
			policies: httpPolicy,
			ev:       withHTTP(tcp(frontend, web, 8080), "GET", "/api/items/7"),
			egress:   "allowed/not-selected", ingress: "allowed/allow-rule/CiliumClusterwideNetworkPolicy/web-http ingress[0]",
		},
		{
			name:     "HTTP rule denies other method",
			policies: httpPolicy,
			ev:       withHTTP(tcp(frontend, web, 8080), "DELETE", "/api/items/7"),
			egress:   "allowed/not-selected", ingress: "denied/l7-denied/CiliumClusterwideNetworkPolicy/web-http ingress[0]",
		},
		{
			name:     "HTTP path regex is anchored",
			policies: httpPolicy,
			ev:       withHTTP(tcp(frontend, web, 8080), "GET", "/admin/api/items/7"),
			egress:   "allowed/not-selected", ingress: "denied/l7-denied/CiliumClusterwideNetworkPolicy/web-http ingress[0]",
		},
		{
			name: "L3-only allow does not lift HTTP rules",
			policies: httpPolicy + `---
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: web-l3}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: frontend}}]
`,
			ev:     withHTTP(tcp(frontend, web, 8080), "DELETE", "/"),
			egress: "allowed/not-selected", ingress: "denied/l7-denied/CiliumClusterwideNetworkPolicy/web-http ingress[0]",
		},
		{
			name: "port allow without HTTP rules lifts them",
			policies: httpPolicy + `---
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: web-l4}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: frontend}}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
`,
			ev:     withHTTP(tcp(frontend, web, 8080), "DELETE", "/"),
			egress: "allowed/not-selected", ingress: "allowed/allow-rule/CiliumClusterwideNetworkPolicy/web-l4 ingress[0]",
		},
		{
			name: "specs are numbered",
			policies: `
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: multi}
specs:
- endpointSelector: {matchLabels: {app: db}}
  ingress: [{fromEndpoints: [{matchLabels: {app: cache}}]}]
- endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: db}}]
  - fromEndpoints: [{matchLabels: {app: frontend}}]
`,
			ev:     tcp(frontend, web, 8080),
			egress: "allowed/not-selected", ingress: "allowed/allow-rule/CiliumClusterwideNetworkPolicy/multi specs[1].ingress[1]",
		},
		{
			name: "toServices is reported and matches nothing",
			policies: `
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: web}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
  - toServices: [{k8sService: {serviceName: db, namespace: shop}}]
    toPorts: [{ports: [{port: "5432", protocol: TCP}]}]
`,
			ev:     tcp(web, db, 5432),
			egress: "denied/default-deny", ingress: "allowed/not-selected",
			wantWarning: "toServices is not evaluated",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := buildSet(t, tt.cfg, tt.policies)
			v, err := s.Evaluate(tt.ev)
			if err != nil {
				t.Fatalf("Evaluate: %v", err)
			}
			if g := got(v.Egress); g != tt.egress {
				t.Errorf("egress = %s, want %s (%s)", g, tt.egress, v.Egress)
			}
			if g := got(v.Ingress); g != tt.ingress {
				t.Errorf("ingress = %s, want %s (%s)", g, tt.ingress, v.Ingress)
			}
			warnings := strings.Join(s.Warnings(), "\n")
			if tt.wantWarning == "" && warnings != "" {
				t.Errorf("Warnings() = %q, want none", warnings)
			}
			if !strings.Contains(warnings, tt.wantWarning) {
				t.Errorf("Warnings() = %q, want one containing %q", warnings, tt.wantWarning)
			}
		})
	}
}

const dnsPolicy = `
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: web-dns}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
  - toEndpoints:
    - matchLabels: {k8s:io.kubernetes.pod.namespace: kube-system, k8s-app: kube-dns}
    toPorts:
    - ports: [{port: "53", protocol: ANY}]
      rules:
        dns:
        - matchPattern: "*.example.com"
`

const httpPolicy = `
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: web-http}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: frontend}}]
    toPorts:
    - ports: [{port: "8080", protocol: TCP}]
      rules:
        http:
        - {method: GET, path: "/api/.*"}
`

// Ensure invalid policies are named, left out, and do not stop the valid ones.
func TestBuildInvalidPolicy(t *testing.T) {
	d := &Decoded{}
	docs := webPolicy + `---
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: broken}
spec:
  endpointSelector: {matchLabels: {app: x}}
  egress:
  - toCIDR: [not-a-cidr]
`
	if err := DecodeYAML(strings.NewReader(docs), "p.yaml", d); err != nil {
		t.Fatalf("DecodeYAML: %v", err)
	}
	s, err := d.Build(Config{})
	if !errors.Is(err, ErrInvalidPolicy) || !strings.Contains(err.Error(), "CiliumClusterwideNetworkPolicy/broken") {
		t.Fatalf("Build error = %v, want ErrInvalidPolicy naming broken", err)
	}
	if s.Len() != 1 {
		t.Errorf("Len() = %d, want 1 (the valid policy)", s.Len())
	}
}

// Ensure a document the loader cannot take is an error naming the file, the document and why,
// and the documents around it are still read: a typo in a hand-edited policy (never a silent
// change), and a null ICMP field (which makes Cilium's own decoder panic).
func TestDecodeYAMLRejects(t *testing.T) {
	const db = `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: db, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: db}}
`
	for _, tc := range []struct {
		name    string
		docs    string
		want    []string // in the error
		cnps    int      // policies read
		skipped string   // the kind skipped, if any
	}{
		{
			name:    "unknown field",
			docs:    "kind: ConfigMap\napiVersion: v1\nmetadata: {name: x}\n---\n" + db + "  ingres: [{}]\n",
			want:    []string{"p.yaml#2", "ingres"},
			skipped: "ConfigMap",
		},
		{
			name: "null ICMP field",
			docs: strings.Replace(db, "name: db", "name: ping", 1) + "  egress:\n  - icmps:\n    - fields:\n      -\n---\n" + db + "  ingress: [{}]\n",
			want: []string{"p.yaml#1 (CiliumNetworkPolicy/shop/ping)", "null"},
			cnps: 1,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &Decoded{}
			err := DecodeYAML(strings.NewReader(tc.docs), "p.yaml", d)
			for _, w := range tc.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("DecodeYAML error = %v, want one saying %q", err, w)
				}
			}
			if len(d.Rejected) != 1 || len(d.CNPs) != tc.cnps {
				t.Errorf("rejected %d, read %d policies, want 1 rejected and %d read", len(d.Rejected), len(d.CNPs), tc.cnps)
			}
			if tc.skipped != "" && (len(d.Skipped) != 1 || !strings.Contains(d.Skipped[0], tc.skipped)) {
				t.Errorf("Skipped = %v, want the %s", d.Skipped, tc.skipped)
			}
		})
	}
}

// Ensure lost-events notices are refused rather than evaluated as empty flows.
func TestEvaluateNotFlow(t *testing.T) {
	s := NewPolicySet(Config{})
	if _, err := s.Evaluate(&flows.Event{Kind: flows.KindLost}); !errors.Is(err, ErrNotFlow) {
		t.Fatalf("Evaluate(lost) error = %v, want ErrNotFlow", err)
	}
}

// Ensure Replace switches sets atomically while other goroutines evaluate.
func TestEvaluatorReplace(t *testing.T) {
	open := NewPolicySet(Config{})
	closed := buildSet(t, Config{}, webPolicy)
	ev := tcp(frontend, web, 9090)
	e := NewEvaluator(open, nil)
	if v, _ := e.Evaluate(ev); v.Denied() {
		t.Fatalf("with no policies: %v, want allowed", v)
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 1000 {
				if _, err := e.Evaluate(ev); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	e.Replace(closed)
	wg.Wait()
	v, _ := e.Evaluate(ev)
	if !v.Ingress.Denied() {
		t.Fatalf("after Replace: %v, want ingress denied", v.Ingress)
	}
}
