// Package audit shadow-evaluates Cilium network policies against observed flows: given a set
// of CiliumClusterwideNetworkPolicies and CiliumNetworkPolicies and one normalized flows.Event,
// it decides per direction whether Cilium would allow the flow or drop it, and names the rule
// that decided. It is the pure core of audit mode (issue 6) and of `recommender check`; the
// per-workload lifecycle built on it lives beside it.
//
// # What it owns and what it does not
//
// The package owns the verdict logic. Parsing and label selection are Cilium's own:
// CiliumClusterwideNetworkPolicy.Parse / CiliumNetworkPolicy.Parse (sanitizing, namespace and
// cluster scoping of selectors), pkg/policy/utils.RulesToPolicyEntries (rules to entries, peer
// selectors), and the pkg/policy/types selectors' Matches (matchLabels, matchExpressions,
// entities, CIDR and CIDRSet with except, by prefix containment). It imports pkg/policy/api,
// pkg/policy/types and cilium.io/v2, never the pkg/policy engine; the engine appears only in
// crosscheck_test.go, which compares our verdicts with policy.LookupFlow. It does no I/O except
// LoadDir/DecodeYAML, which read policy files for the check command.
//
// # Semantics
//
// Src of an Event is the client and Dst the server, so a flow is evaluated at the client's
// egress and the server's ingress. A side that is not a workload (an entity or the world), or
// a workload of another cluster of a ClusterMesh (its own agents enforce it), is not a policy
// subject: DecisionNotApplicable. Peer selectors without a cluster select the local cluster
// (Config.ClusterName) unless Config.PolicyAnyCluster, as the agent's
// policy-default-local-cluster; a flow peer is in the cluster its labels name. Per direction
// (see PolicySet.decide):
//
//   - The rules of all policies whose endpointSelector selects the workload are united. With
//     none, the direction is not enforced (allowed, not-selected).
//   - Deny rules (ingressDeny, egressDeny) win over every allow.
//   - Default deny holds once one selecting rule has enableDefaultDeny unset or true in that
//     direction; if all set it false, unmatched traffic is allowed.
//   - Peers: fromEndpoints/toEndpoints (a CNP's selectors get its namespace, a CCNP's get
//     "any namespace"), entities (all, world, cluster, host, remote-node, kube-apiserver,
//     health, init, ingress, unmanaged), CIDR/CIDRSet with except (world peers only, as with
//     Cilium's default policy-cidr-match-mode), toFQDNs against the DNS names Hubble attached to
//     a world peer's address. A toPorts rule without peers means any peer; an empty rule ({})
//     selects nothing but still turns on default deny.
//   - Ports: port, endPort ranges, protocol TCP/UDP/SCTP or ANY (those three); ICMP rules match
//     ICMP flows by type. A rule without toPorts allows every port and protocol.
//   - L7: an HTTP flow (Hubble's proxy record) to a port with HTTP rules must match one rule's
//     method, path and host regular expressions (whole-value, as Envoy applies them); a DNS
//     record to a port with DNS rules must match a matchName/matchPattern, else the DNS proxy
//     refuses it. L4 flows to such ports pass: the proxy decides per request, and Hubble
//     reports each request as its own L7 flow. An L3-only allow of the same peer does not lift
//     a port's L7 rules; a toPorts allow of that port without L7 rules does.
//   - Ingress from the local node's host is allowed while default deny holds, because Cilium
//     runs with allow-localhost=auto, which means "always" on Kubernetes
//     (daemon/cmd/daemon.go); Config.AllowLocalhost "policy" turns that off. A deny rule that
//     matches the host still wins.
//
// # Where a flow lacks the facts
//
//   - Named ports need the pod's container ports: a rule that could match one gives
//     DecisionUnknown, never a false denial. So do HTTP rules that also need headers.
//   - Workload labels in flows are the stable identity labels only. The evaluator adds the
//     namespace, the kubernetes.io/metadata.name namespace label and the cluster name; other
//     namespace labels (io.cilium.k8s.namespace.labels.*) are not in flows, so selectors on them
//     do not match.
//   - Entities carry only their own reserved label; kube-apiserver traffic that Cilium labels
//     both host and kube-apiserver is seen as kube-apiserver only.
//   - toFQDNs matches only when Hubble attached names to the address (its DNS cache saw the
//     lookup); a world peer without names matches CIDR and entity rules only.
//   - Host policies (nodeSelector), toServices and toGroups are not evaluated and are listed by
//     PolicySet.Warnings; a toServices rule matches no peer rather than every peer.
//   - Cilium's policy tiers and priorities are not in CNP/CCNP v2 and are not modelled.
//
// # Concurrency
//
// A PolicySet is immutable once built; Evaluate may be called from many goroutines. The
// per-endpoint selection cache fills lazily under a lock and is cleared, never evicted
// piecemeal, when it reaches its bound. Evaluator swaps whole sets atomically.
package audit
