// Package synth turns an aggregate.Snapshot (observed workload edges) into least-privilege
// CiliumClusterwideNetworkPolicies, one per workload, built with Cilium's own API types.
//
// It owns: choosing the selector of each workload, turning edges into ingress/egress rules
// (endpoints, entities, FQDNs, CIDRs, ports, DNS and HTTP L7 rules), naming and provenance,
// validation (Cilium's Rule.Sanitize and CCNP.Parse, the CCNP CRD's OpenAPI schema, and our
// own refusal of policies that select nothing or allow everything), the review report, and
// the semantic diff between two policy sets. It does not read flows, open the store or talk
// to a cluster: Synthesize is pure (Snapshot + Config in, Result out). The only I/O lives in
// write.go (WriteDir, ReadDir), used by the commands.
//
// # Evidence
//
// Only observations that show the traffic flowing become allow rules: FORWARDED, and AUDIT
// (an existing policy in audit mode would deny it, but the traffic ran and is part of how
// the workload works). An edge with flows dropped by an enforced policy is never allowed
// automatically, even when some of its flows were forwarded (the counts carry no order, and
// the typical case is traffic that ran until a policy was applied): allowing it would
// silently widen what the cluster enforces now. Such edges are listed in the report for
// review instead. Other drops and other verdicts allow nothing either.
//
// A direction in which a workload was never seen talking gets no rules, so the policy does
// not put it in default-deny for that direction; the report says so.
//
// # Selectors
//
// A workload is selected by its namespace (k8s:io.kubernetes.pod.namespace) and the
// smallest set of its stable labels that no other workload observed in the namespace also
// carries, preferring app.kubernetes.io/name, app and k8s-app. Version and chart labels are
// never used. When even the full label set also selects another observed workload (whose
// labels are a superset), DoesNotExist requirements on that workload's extra keys exclude it.
// Peer workloads are selected with the same selector their own policy uses.
//
// # DNS and names
//
// A workload that resolved names gets, towards each DNS server it was seen using (selected by
// that server's observed labels, never by assumed kube-dns labels), port 53 over UDP and TCP
// (TCP carries truncated answers) with rules.dns listing the names it looked up and the
// external names it reached. A family of at least dnsPatternMin sibling names under one
// parent of two or more labels becomes a one-label wildcard (*.parent); everything else is
// matchName. External names reached become toFQDNs matchName rules; an external address with
// no known name becomes a toCIDRSet rule summarized to the configured prefix and flagged.
//
// # Determinism
//
// Output depends only on the Snapshot and Config: workloads, rules, peers, ports and names
// are sorted, names are derived from the workload (with a short hash on collision), and the
// revision annotation is the sha256 of the canonical JSON of the spec.
package synth
