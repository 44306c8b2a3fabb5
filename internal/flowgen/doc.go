// Package flowgen generates Hubble flows deterministically: the recordings in testdata/flows
// and cluster-sized synthetic load for benchmarks.
//
// # What it owns
//
// Flows are built with Cilium's own protobuf types (api/v1/flow, api/v1/observer) in the
// shapes Hubble emits them: identity labels with their source prefix, reserved identities
// (host 1, world 2, health 4, remote-node 6, kube-apiserver 7), trace, drop, policy-verdict
// and L7 (DNS, HTTP) events, observation points, TCP flags, ephemeral client ports, both-end
// observations of cross-node connections, replies, and lost-events notices. JSONL writes
// them exactly as `hubble observe -o jsonpb` prints them.
//
// Scenarios: Cilium's Star Wars demo (Starwars), Google's Online Boutique (Boutique, with
// BoutiqueDay2 and BoutiqueNewConn for the audit lifecycle), and a synthetic cluster with size
// knobs (Cluster) that streams records to a callback so benchmarks need no files, and a week
// of bookinfo and a shop API with attacks on its last day (Week, WeekAttacks) for measuring
// the accuracy of learned policies (issue 14, `make eval`); the week is generated in memory,
// not committed.
//
// Package flood beside it holds LabelFlood (issue 15.6), the exception to the protobuf shapes:
// a flows.Source of events already normalized. It is a package of its own so that flowgen
// never imports pkg/flows, whose tests use flowgen.
//
// # Invariants
//
// Output depends only on the scenario and its configuration: randomness comes from a PCG
// seeded with a constant, time from a fixed base. The same call writes the same bytes on
// every run and machine; TestCommittedFilesUpToDate holds testdata/flows to that.
//
// The recordings model a cluster whose identity label filter keeps pod-template-hash (users
// can configure Cilium that way), so the recommender's own label filtering is exercised.
//
// It is a test and benchmark helper: nothing in the daemon imports it.
package flowgen
