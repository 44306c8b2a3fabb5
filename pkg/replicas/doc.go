// Package replicas lets several daemons share the reading of a cluster's nodes (issue 19,
// `run --hubble-peers --replicas N`): each node is read by exactly one replica, and every
// replica synthesizes from the merge of all replicas' edges, so what one replica observed is
// neither missing from the others' proposals nor counted twice.
//
// # Split
//
// The nodes are assigned by rendezvous hashing of the node name over the replica set
// (flows.Rendezvous): every replica computes the same owner for every node with no
// coordination, and a change of the set moves only the nodes of the replica that came or
// went. The set is every index (static), or with Membership the live ones: each replica
// renews a Lease of its own and counts the others' Leases held and fresh on its own clock;
// one that cannot renew within its deadline reads no node, before the others may take its
// nodes (docs/scale.md, "Partitions").
//
// # Merge
//
// Each replica serves its edge summary (Summary: its in-memory aggregate snapshot and how
// far it read each node) on its metrics port (Handler, SummaryPath). Before every synthesis
// Set.Snapshot pulls the other replicas' summaries and merges them with its own
// (aggregate.Merge: counts summed, first seen the earliest, last seen the latest). A replica
// that does not answer keeps contributing its last summary: its edges do not vanish from the
// proposals while it restarts. Summaries are small next to flows: edges, not events. The
// snapshot travels in its binary form (aggregate.Snapshot.MarshalBinary, about 70 bytes per
// edge) to a puller that asks for SummaryType, as JSON (about 800) to one that does not, so
// replicas of an older version still merge with this one's; a pull is bounded by MaxSummary
// (MaxSummaryFor).
//
// # Kept summaries
//
// Each replica keeps the others' last summaries in its own store (Local.Kept, the store's
// kept bucket): the first pull of each at once, then every KeepEvery, and after every change
// of the live set. At start a kept summary stands in for its replica until that replica
// answers: its edges are merged, its positions are where a moved node starts, its evidence
// is listed as not pulled, and the replica is still waited for. A summary of an index outside
// the set (--replicas lowered) stands in for good, for a daemon alone (no URLs, HasKept) too;
// a stand-in's edges expire by Config.Retention, and an empty stand-in is dropped. Each
// summary lists the stand-ins its replica holds (Summary.Copies), and a puller whose own is
// older takes the newer copy (CopyParam): every replica merges the newest one, where a node
// that moved starts. A summary names its store (Summary.Store): one from another store than
// before (a lost volume) does not replace the old one, which stands in beside it (retired),
// kept in the same write as the new one; retired summaries are listed as copies too, and
// every replica, the replaced one included, takes the newest it lacks once it knows which
// store the replica serves. A retired summary is dropped when its store comes back, but only
// if what the store serves holds every edge of it (one restored from a backup does not).
// Stores are ordered by their identity (the creation time): a copy from an older store than
// the one held is not taken. So neither a restart, a smaller set nor a lost volume forgets the edges of a
// replica. Read offline (ReadKept, MergeKept: `recommend --db`, `status`), a replica's store
// gives the merge a daemon alone on it starts from.
//
// # Handover
//
// A node that moves to this replica (the replica set changed, or a replica's Lease expired
// or returned) is read from where the replicas' summaries say it was read to (Set.Start,
// flows.NodesConfig.Start), so what the previous owner stored is not counted again; what it
// read after this replica last pulled its summary is read again here, and counted twice if
// the previous owner still stores it (a partitioned replica that stopped reading). What the
// previous owner read before its last summary was pulled and never committed is lost with
// it, as a crash loses the last batch.
//
// # Audit evidence
//
// Each replica shadow-evaluates only the flows of its own nodes, so a window one replica sees
// clean may hold a would-be-denied flow another saw. The summary therefore carries the
// replica's own lifecycle evidence (lifecycle.Evidence: per workload its revision, window
// start, flows evaluated, hold, lost ratio, promotion and demotion times), and Set.Peers hands
// the others' to the audit stage, which merges it before it promotes
// (lifecycle.Machine.MergePeers): windows restart at the latest start any replica reports,
// flows are summed, the worst lost ratio counts, and nothing is promoted while a replica did
// not answer this sync or audits another revision. A promotion or demotion by one replica is
// followed by the others at their next sync.
//
// # Counting
//
// Each node's stream is folded on its own (flows.NodesSource), so what a replica counts for
// a node does not depend on which replica reads it, nor on the order node streams arrive in:
// the merge equals what one daemon reading every node stores (TestReplicasMatchOneDaemon).
// A connection observed at both ends on two nodes counts once per node, where a folded
// relay stream counts it once: edges and their first and last seen are the same, counts of
// such edges higher. A connection busy across a handover may count once more, at the new
// owner's first record of it.
//
// It does not own the node streams (pkg/flows), the store (pkg/aggregate) or HTTP serving
// (pkg/daemon serves Handler on the metrics listener).
package replicas
