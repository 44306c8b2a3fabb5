// Package synth turns an aggregate.Snapshot (observed workload edges) into least-privilege
// CiliumClusterwideNetworkPolicies, one per workload, built with Cilium's own API types.
//
// It owns: choosing the selector of each workload, turning edges into ingress/egress rules
// (endpoints, entities, FQDNs, CIDRs, ports, DNS and HTTP L7 rules), naming and provenance,
// validation (Cilium's Rule.Sanitize and CCNP.Parse, the CCNP CRD's OpenAPI schema, and our
// own refusal of policies that select nothing or allow everything), the review report, the
// semantic diff between two policy sets, and graphs of them (graph.go). It does not read
// flows, open the store or talk to a cluster: Synthesize is pure (Snapshot + Config in, Result out). The only I/O lives in
// write.go (WriteDir: policies, REPORT.md, GRAPH.md), used by the commands; audit.LoadDir
// reads a policy directory back.
// Proposals are CCNPs; with Config.PolicyKind KindCNP the edges render them as
// CiliumNetworkPolicies (see Namespaced output).
//
// # Evidence
//
// Only observations that show the traffic flowing become allow rules: FORWARDED (L3/L4, or
// when no L3/L4 record of the edge exists, requests the proxy forwarded), and AUDIT
// (an existing policy in audit mode would deny it, but the traffic ran and is part of how
// the workload works). An edge with flows dropped by an enforced policy is never allowed
// automatically, even when some of its flows were forwarded (the counts carry no order, and
// the typical case is traffic that ran until a policy was applied): allowing it would
// silently widen what the cluster enforces now. Such edges are listed in the report for
// review instead. Other drops and other verdicts allow nothing either.
//
// A direction in which a proposed workload was never seen talking is closed: the policy holds
// one empty rule there (ingress: [{}] or egress: [{}]), which puts the endpoint in default deny
// for that direction and allows nothing (Config.QuietDirections deny, the default). The
// workload was observed long enough to be proposed, so the silence is evidence, and the audit
// window catches what the observation missed like any other rule. Proposal.Closed and the
// report list these directions; QuietOpen writes nothing for them (unrestricted) instead.
//
// # Selectors
//
// A workload is selected by its namespace (k8s:io.kubernetes.pod.namespace) and the
// smallest set of its stable labels that no other workload observed in the namespace also
// carries, preferring app.kubernetes.io/name, app and k8s-app. Version and chart labels are
// not used, with one exception below. When even the full label set also selects another
// observed workload (whose labels are a superset), DoesNotExist requirements on that
// workload's extra keys exclude it.
//
// Workloads that differ only in a version or chart label and were seen at the same time
// (canaries: bookinfo's reviews v1, v2, v3) are told apart on the subject: its selector keeps
// the distinguishing label (version first), or requires the other's key to be absent, so that
// no version gets the union of the others' rules. Peers are selected by the general selector,
// without it: a client that reaches the Service reaches every version. Workloads seen one after
// the other (a rollout that changed the label while observing) keep sharing the general
// selector. A rollout after the proposal that changes a kept label brings pods no policy
// selects: they fail open (unrestricted until the next proposal), and their peers still allow
// them because peer selectors never carry the label; never a false deny. The finding
// version-selector says so on every policy concerned.
//
// Rules that name the same peers (distinct observed peers can share a selector) are merged
// into one with the union of their ports.
//
// # ClusterMesh
//
// Identity labels carry the endpoint's cluster (k8s:io.cilium.k8s.policy.cluster), and
// workloads keep it: the same labels in two clusters are two workloads. Only workloads of the
// local cluster (Config.ClusterName, else the one cluster the flows name; several without it
// is ErrClusterMesh) get policies; the others are peers, skipped with SkipRemoteCluster. Peer
// selectors name the peer's cluster whenever one is known, the local one included, so that a
// policy means the same whatever policy-default-local-cluster says (false on Cilium 1.18 and
// older, true from 1.19); subject selectors name none. See docs/clustermesh.md.
//
// # DNS and names
//
// A workload that resolved names gets, towards each DNS server it was seen using (selected by
// that server's observed labels, never by assumed kube-dns labels), port 53 over UDP and TCP
// (TCP carries truncated answers; a client seen on 53/UDP without visible lookups also gets
// both, as its server's ingress does) with rules.dns listing the names it looked up and the
// external names it reached. A family of at least dnsPatternMin sibling names under one
// parent of two or more labels becomes a one-label wildcard (*.parent); everything else is
// matchName. External names reached become toFQDNs matchName rules; an external address with
// no known name becomes a toCIDRSet rule summarized to the configured prefix and flagged. A
// name a matchName cannot hold (a character other than letters, digits, '-' and '_' between
// dots, as a literal "*.example.com" lookup has) would make Cilium refuse the whole policy:
// it is left out and flagged unexpressible, its traffic allowed by the addresses DNS answers
// gave for it when there are any, its lookups not allowed (or, when no other name was looked
// up, not restricted: no DNS rule is written).
//
// # HTTP
//
// With Config.L7HTTP, ingress ports where the proxy saw HTTP get method and path rules. Envoy
// matches both regular expressions against the whole header, and the path against the whole
// :path, query string included. Methods are exact, case included (quoted: the rule is a
// regular expression). A request no rule can match exactly (a method that is not an HTTP
// token, a path that does not start with /) leaves its port at L4, flagged unexpressible.
// Path segments that are numbers, UUIDs or hex digests (16 digits or more, length kept) become
// patterns of that shape, everything else is literal, and every path allows any query string:
// the observations keep none, so the port is flagged http-query-any. gRPC method paths (POST
// /pkg.Service/Method) are exact.
// Cilium unites the policies selecting an endpoint, so an L4-only allow of a peer and port in
// one policy would undo another's HTTP rules for the same pods: such policies share the union
// of their HTTP rules, or, when one side's samples were truncated, both stay at L4 and are
// flagged (http-l4-elsewhere).
//
// # Graphs
//
// PolicyGraph and ClusterGraph turn policies into a Graph (nodes, edges, marks) built from
// their atoms, the same Diff compares, and Graph.Mermaid renders it as a ```mermaid block:
// REPORT.md draws each policy, GRAPH.md all of them grouped by namespace, and gitops each
// policy of a pull request with the rules the change adds and removes marked. Node ids are
// n0, n1, ... in sorted order; labels are quoted and every character outside a small safe set
// is a Mermaid entity, so no selector, name or annotation can break the diagram. A policy
// graph draws at most MaxPolicyGraphEdges edges (changed ones first) and GRAPH.md at most
// MaxClusterGraphEdges, counting the rest in "+N more" nodes: well within Mermaid's default
// limits (500 edges, 50,000 characters), above which it draws an error instead of the diagram.
//
// # Namespaced output
//
// Config.PolicyKind KindCNP (--policy-kind CiliumNetworkPolicy) writes each proposal as a
// CiliumNetworkPolicy in its workload's namespace. Synthesis does not change: Proposal.Policy
// stays a CCNP, and the edges render it with AsCNP (WriteDir lays files out as
// <namespace>/<name>.yaml; pkg/cluster and pkg/gitops do the same). Meaning is kept because
// every generated selector already names its namespace, and Cilium's ParseToCiliumRule leaves
// a selector naming one (or a reserved label) alone in both kinds; AsCNP writes out the
// "any namespace" Cilium implies in a CCNP for any peer selector that names none, so
// hand-written or adopted policies keep theirs too. FromCNP is the way back. Entities, CIDRs
// and FQDNs are not namespaced. Tests prove it on every flow of the recordings with the
// evaluator and with Cilium's parser.
//
// # Determinism
//
// Output depends only on the Snapshot and Config: workloads, rules, peers, ports and names
// are sorted, names are derived from the workload (with a short hash on collision), and the
// revision annotation is the sha256 of the canonical JSON of the spec.
package synth
