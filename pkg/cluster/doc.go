// Package cluster delivers policies to a Kubernetes cluster and reads
// context from it. It is the sink of the pipeline that writes; nothing to its
// left talks to the API server.
//
// # What it owns
//
//   - Applier: server-side apply (field manager "recommender") of
//     CiliumClusterwideNetworkPolicies through the dynamic client, with the
//     ownership rules below, dry-run, retries and pruning. With
//     Config.PolicyKind synth.KindCNP it writes CiliumNetworkPolicies instead,
//     each in the namespace its endpointSelector names (synth.AsCNP), under the
//     same rules; Config.Namespaces (--namespace) confines it to those
//     namespaces: it lists, adopts, keeps and prunes only their CNPs and
//     refuses a policy for any other, so a team's daemon needs no
//     cluster-wide right and two teams' daemons never touch each other's
//     policies. The caller's policies stay CCNPs (Desired, Owned). Sync is idempotent:
//     the daemon calls it with the whole desired state on start and after
//     every change, so a crash mid-apply converges on the next call.
//   - Elector: leader election on a coordination.k8s.io Lease. All replicas
//     ingest and evaluate; only the leader writes. Writes stop the moment the
//     lease is lost.
//   - Reader: read-only context (namespaces, pods and their owning workloads,
//     existing CNPs and CCNPs, the cluster name in Cilium's cilium-config)
//     returned as plain data or Cilium's own types; Reader.Scoped reads given
//     namespaces only (and no CCNPs).
//
// It does not decide what to apply: synthesis and the audit lifecycle do, and
// the daemon passes the result to Sync.
//
// # Ownership
//
// An object is ours when it carries the label
// app.kubernetes.io/managed-by=recommender; Sync adds that label to every
// policy it applies. Only objects that are ours are ever changed or deleted.
// A policy in the cluster with a desired name that is not ours is reported as
// a *NotOwnedError in the Result and left alone.
//
// Every write of an existing object is conditioned on the resourceVersion
// seen when its ownership was checked, and every delete on its UID and
// resourceVersion, so an object that changes hands between the check and the
// write makes the write fail with a conflict; Sync then checks again. New
// objects are applied without force, so a foreign object created in the
// instant before ours makes the apply fail with a field-manager conflict
// instead of taking it over.
//
// Two recommender installations in one cluster would prune each other's
// policies: the label does not say which installation owns an object.
//
// # Deleting and replacing what is in force
//
// A policy in the cluster is enforcement somebody proved; not knowing about
// it is no reason to remove it. So Sync never infers a delete from absence
// (issue 20): a replica with a new, lost or restored store would otherwise
// return the cluster to no enforcement.
//
//	owned policy in the cluster       Sync
//	desired, same revision            nothing (no request at all)
//	desired, other revision           applied if Plan.Destructive, else deferred
//	desired, same revision, other     drift: reported and left, or taken back
//	rules (another field manager)      with Config.ForceConflicts
//	desired but in audit, cluster     kept (an older revision stays in force);
//	enforcing                          withdrawn only if it was applied as audit
//	in Plan.Retired at a revision     pruned if Plan.Destructive and within
//	the store delivered                Config.MaxPruneRatio, else deferred/refused
//	anything else                     kept as it is (ActionKept)
//
// The daemon reads our policies back (Owned) and adopts them as the starting
// state of its lifecycle before it builds the Plan. Writes happen only when
// the rules, the revision, the lifecycle annotation or our labels change: a
// write wakes every Cilium agent's policy watch.
//
// # Modes
//
// Config.Apply "off" (the default) never writes: Sync returns
// ErrApplyDisabled unless DryRun is "server", which asks the API server to
// validate every policy (schema included) without persisting anything.
// "enforce" writes promoted policies; with ClusterAuditMode, Cilium runs in
// policy-audit-mode and enforces nothing, so policies still in audit are
// applied as well and Hubble's AUDIT verdicts become the evidence.
//
// # RBAC
//
// deploy/rbac.yaml grants exactly what this package uses: CCNPs
// get/list/create/patch/delete, CNPs, pods and replicasets list, and create on
// leases and get/update on its own Lease in the daemon's namespace;
// deploy/rbac-cilium-config.yaml grants get on the one ConfigMap cilium-config in
// Cilium's namespace. deploy/namespaced (CNPs of the daemon's own namespace) grants
// only Roles: CNPs get/list/create/patch/delete, pods and replicasets list there,
// and the Lease. TestRBAC proves both needed and sufficient through impersonation.
package cluster
