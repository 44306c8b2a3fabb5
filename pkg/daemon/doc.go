// Package daemon is `recommender run`: it wires the stages the command built into one
// long-running process and owns what no single stage can, nothing more.
//
// What it owns:
//
//   - Building the Ingester (pkg/aggregate) over the command's store and aggregator with the
//     audit stage's hooks (pkg/auditor), so the audit stage sees every stored event and its
//     state commits with the batches.
//   - The goroutines and their exits. Run starts the audit stage's goroutine (pkg/auditor's
//     Start), the HTTP servers (serveAll: one that stops serving ends Run with its error) and,
//     under one errgroup, the ingest loop (the flow source into the store, pkg/aggregate's
//     Ingester), the sync loop and the leader campaign (Deps.Elector); the first error stops
//     all, and shutdown runs in one written order: the source stops, a final sync, the last
//     batch, cursor and lifecycle state are committed (Ingester.Commit), then HTTP stops and
//     the audit stage's goroutine ends (Close). The store is the caller's to close.
//   - The sync loop, every Config.SyncInterval: synthesize proposals from the store's
//     snapshot (pkg/synth), hand them to the audit stage (pkg/auditor), deliver what is due —
//     to Config.OutDir, to the cluster (Deps.Applier, leader only) and as pull requests
//     (Deps.Publisher) — and have the Ingester commit what the sync changed.
//   - HTTP (http.go, status.go): /metrics from Deps.Registry, /healthz, /readyz (every
//     ReadinessCheck passes), the read-only status page at /, and pprof on its own listener.
//     The listeners come from the command, bound before Run; one that stops serving fails
//     the daemon, since /readyz and /metrics are how it is watched.
//   - The sync loop's metrics (metrics.go, documented in docs/metrics.md); every stage
//     registers its own.
//
// What it does not own: flag parsing and building the stages (cmd/recommender), signals
// (the command's root context), the meaning of a flow, an edge or a policy (the stage
// packages), and any Kubernetes or git call (pkg/cluster, pkg/gitops behind the small
// interfaces of daemon.go).
package daemon
