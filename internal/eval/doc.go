// Package eval measures how well learned policies hold (issue 14): it learns policies from the
// first days of flowgen's generated week, then scores them with the project's own evaluator
// (pkg/audit, which follows Cilium's semantics) on the later days and on attack connections.
//
// # What is measured
//
//   - False denies: held-out flows (normal traffic after the learning days) the policies would
//     drop. The target is none.
//   - Attacks allowed: connections no workload made during the week (flowgen.WeekAttacks) that
//     the policies let through, at L3/L4 and, separately, HTTP requests on allowed connections
//     (those can only be denied with L7 rules). The target is none at L3/L4.
//   - Allowed/observed tuples: how many (source, destination, port) tuples the policies allow,
//     over every workload, the world and the API server as ends and every server port seen in
//     the week, against the tuples observed during the whole week. The node's own host is left
//     out as a source: Cilium lets it reach its pods whatever the policies say
//     (allow-localhost). The target is below 2.
//
// Everything is generated and evaluated in memory; the numbers depend only on the code.
package eval
