// Package auditor is the audit stage of the pipeline: it runs proposed policies in the shadow
// of live traffic and decides, with pkg/lifecycle, when each may be enforced.
//
//	flows.Event --Observe--> verdict (pkg/audit) --> lifecycle.Machine --> metrics, transitions
//	synth.Result --Update--> revisions proposed, windows checked, promotions
//
// What it owns:
//
//   - The shadow verdict of every stored flow against the revision each workload end is
//     audited with (and, for drops, the revision enforced): would-be-denied flows counted
//     (recommender_would_deny_flows_total) and logged once per edge, Cilium's own AUDIT
//     verdicts and policy drops after enforcement counted and attributed.
//   - The lifecycle of every workload (pkg/lifecycle's Machine): revisions proposed, windows
//     restarted by would-be-denied flows, promotions, adoption of our policies found in
//     force, retirement of workloads that left the store, and the warm-up before any of that
//     may be destructive.
//   - Its goroutine: Observe only queues the event (bounded, so a slow evaluation slows
//     ingestion instead of growing memory); the auditor's goroutine evaluates and accounts it.
//   - Its persistence, with one writer: the state is written only by the hooks it hands the
//     Ingester (Hooks), inside the Ingester's commits, each commit first waiting until every
//     event handed over before it is accounted, so a window restarted by a flow reaches the
//     disk no later than the batch that holds the flow (with it, or with an earlier commit:
//     then a crash may count that flow again after a restart, never lose its verdict). Someone that changed state
//     outside a batch (a sync's promotions) asks the Ingester to commit (aggregate.Ingester's
//     Commit); nobody else writes lifecycle state.
//   - Its metrics (metrics.go, documented in docs/metrics.md) and the read model of the
//     status page (Status).
//
// What it does not own: what a policy allows (pkg/audit), how a proposal is made (pkg/synth),
// and where policies are delivered (pkg/cluster, pkg/gitops, through pkg/daemon, which reads
// States and reports back with Adopt and Settle).
package auditor
