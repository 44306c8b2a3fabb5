// Package lifecycle decides when a proposed policy may be enforced.
//
// Every workload moves through three states:
//
//	observing --(enough evidence: synthesis proposes a first revision)--> audit
//	audit     --(window clean: no would-be-denied flow, enough flows, Hubble saw it)--> enforced
//	audit     --(would-be-denied flow)--> audit, window restarted (the next revision learns the edge)
//	enforced  --(policy drop, with DemoteOnDrop)--> audit
//
// A window is clean only when Window has passed since the current revision was proposed or
// since its last would-be-denied flow, at least MinWindowFlows of the workload's flows
// were evaluated, and the events Hubble lost on the nodes the workload ran on stay below
// MaxLostRatio of the events seen there: a window we could not see is not clean.
//
// Replicas that split the nodes each see part of a workload's flows: each merges the others'
// Evidence before it promotes (MergePeers, peers.go), so a window is clean only when it is
// clean on every node.
//
// # What it owns
//
// The Machine holds one Record per workload and the per-node flow and lost-event totals the
// lost ratio is computed from. It is pure: callers feed it observations with their flow time
// and persist Records (Marshal/Unmarshal) in the store, so a restart keeps each window's start.
// It does not evaluate flows (package audit does) nor synthesize policy (package synth).
package lifecycle
