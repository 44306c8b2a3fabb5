// Package aggregate turns the endless flow stream into workload edges: which workload talked
// to which peer, on which protocol and port, how often, first and last seen, with what
// verdicts, and (when the proxy saw them) which DNS names and HTTP paths. It owns the only
// bbolt file of the daemon and the ingest cursor stored with it.
//
// It does not decide policy (pkg/synth reads Snapshots), does not talk to Hubble (pkg/flows
// delivers flows.Events) and imports neither cilium.io/v2 nor pkg/policy.
//
// # Model
//
// A workload is a namespace plus its stable label set (flows.Labels; churning labels such as
// pod-template-hash are already gone). An edge is (workload, direction, peer, protocol, port).
// Each flow becomes the client's egress edge to the server and the server's ingress edge from
// the client, for each end that is a workload; reserved entities and the world have no edges
// of their own. Both observations of one connection must be folded before (flows.Folder).
//
// Peers are workloads, reserved entities, FQDNs or CIDRs. An external server is an FQDN when
// Hubble attached names to its IP or a DNS answer seen earlier linked the IP to a name (the
// first name in sort order, so one connection is one edge); otherwise a /32 or /128 CIDR.
// External clients (ingress) are always CIDRs, since Cilium has no fromFQDNs.
//
// L7 records are evidence: DNS requests add the queried name to the client's egress edge to
// its DNS server, DNS answers fill the IP -> names map, HTTP requests add method+path samples,
// one per method and path shape (flows.HTTPPathShape: /api/orders/42 and /api/orders/43 are
// one sample), so the bound counts routes, not IDs.
// Forwarded L7 records are counted apart (Counts.L7), since their L3/L4 trace already counted
// the packet; an L7 request that is the only record of its connection (flows.Event.Connection:
// captures of L7 events alone) is counted as Forwarded too.
//
// # Bounds
//
// Memory and disk grow with distinct edges, not with flows:
//   - more than Config.MaxPorts ports for one (workload, direction, peer, protocol) collapse
//     into one range edge [min, max] with Collapsed set, for review; later ports widen it;
//   - more than Config.MaxWorldPeers CIDR peers per (workload, direction) fold into the entity
//     "world";
//   - Config.MaxWorkloads and Config.MaxEdges cap the rest: observations beyond them are
//     dropped, counted (Snapshot.Overflow, recommender_aggregate_overflow_total) and warned
//     about once;
//   - the caps are shared: one namespace holds at most Config.MaxWorkloadsPerNamespace
//     workloads and one workload at most Config.MaxEdgesPerWorkload edges, so one flooding
//     source cannot keep the workloads arriving after it out of the store;
//   - a label key with more than Config.MaxLabelValues values within one owner (namespace,
//     owner, all other labels equal) churns: it is dropped from the identities of that owner
//     from then on (churn.go; Snapshot.Churning, recommender_aggregate_churning_labels_total,
//     stored in meta "churn"); the variants stored before detection are merged into the
//     identity without it, edges included (fold_variants.go);
//   - DNS names, HTTP samples, nodes and owner names per record are bounded lists;
//   - the edge journal is folded into the edge tree once it holds twice the tree's edges
//     (counting at least 4,096), or 32 batches and an eighth of the tree's edges, or 256
//     batches (foldDue), so it never holds more than about twice the live edges, however
//     many flows were committed.
//
// The edges are held in tables without pointers (edges.go, groups.go): the garbage collector
// does not scan them, and the live heap is about 130-160 bytes per edge from 10k to 1M edges
// (more per edge below, where the tables' fixed part dominates: about 240 at 1k; docs/scale.md),
// so 250,000 edges take about 40 MiB of heap and, with Go's GC headroom and the mapped store
// pages, under 200 MiB of RSS. The label flood of issue 15 (1M flows,
// a new version label on every other one) stays at 70-72 MiB peak RSS, a 3-4 MiB store and
// 103 workloads (BenchmarkLabelFlood, 2 December 2026, after issue 19.2; 92 MiB and 16 MiB
// before).
//
// # Validation
//
// Every record is checked before it touches the state (validate.go): a missing or future
// timestamp (more than five minutes ahead of the wall clock), no endpoint at all, a TCP, UDP
// or SCTP port outside 1-65535, an ICMP type above 255, more than 128 labels, a label over
// 1 KiB, an identity over 8 KiB, an empty or oversized name, a NUL byte or invalid UTF-8 in
// anything that becomes part of a key, a DNS answer address that does not parse. Such a record
// is dropped alone, counted by reason (Snapshot.Rejected, recommender_aggregate_rejected_total)
// and the first of each reason is logged with a short excerpt; it never fails a commit and
// never moves the resume cursor or the flow clock.
//
// # Durability
//
// The Ingester folds events in memory and commits in batches (Commit: one bbolt write
// transaction, fsynced), by size or interval, whichever comes first. A commit writes only the
// records the batch changed, already encoded by TakeBatch, its edges appended to the journal
// (Layout) in the same transaction; while it is written the Ingester
// goes on folding into the next batch, which is committed as soon as it is due and the
// commit before it is done (it may grow past its size meanwhile, see IngesterConfig). The
// ingest cursor (flows.Cursor: per node, the newest flow time and the IDs at that time) and
// the lifecycle hook's writes go in the same transaction as the counts the cursor covers, so
// a SIGKILL loses at most the batch being committed and the one being built, and a restart,
// skipping what the cursor has seen, neither loses nor double-counts.
// bbolt's copy-on-write pages and meta-page switch make every commit atomic; the file is
// never left half-written.
//
// # Layout (schema 4)
//
// All keys sort bytewise, so prefix scans find one workload's edges. Edge values are binary
// (appendEdge in codec.go: a format byte, then varints and length-prefixed strings); the
// other values are JSON objects. Times are Unix nanoseconds, UTC.
//
// A commit does not put its edges into the edge tree: it appends them, in key order, as one
// batch of the journal (journal.go). Once the journal is due (foldDue: twice the tree's edges,
// or many batches), a commit also folds it: the tree and the journal are merged, the newest
// entry of each key winning, and written as the tree anew, and the journal is emptied, all in
// that commit's transaction. Every reader (Snapshot, Workload, Load and what builds on them,
// Compact) merges the tree with the journal, the newest entry of a key winning.
//
//	meta       "format"  -> "recommender-aggregate" (a file without it is not ours)
//	           "schema"  -> uint32 BE, 4
//	           "created" -> RFC 3339 time the store was created, to the nanosecond
//	                        in newer stores (Store.Identity)
//	           "totals"  -> {flows, overflow, from, to}
//	           "cursor"  -> flows.Cursor.MarshalBinary (versioned by flows)
//	           "churn"   -> [{ns, owner, key}] churning labels dropped from identities
//	           "files"   -> [{path, offset, line, head, tail, time}] how far ingest read each
//	                        plain file (flows.FileMark), so a restart seeks there
//	totals also hold "rejected", the malformed records dropped.
//	workloads  <namespace "/" labels joined by ","> -> {key, names, first, last, flows, nodes}
//	           "journal" -> {batches, entries, tree, next}: the journal's size, the tree's
//	                        edges after the last fold, the next batch's number
//	edges      <edge key of the chunk's last entry>
//	           -> a chunk of edges, as the journal's (no deletions)
//	           edge key: <workload key> 0x00 <direction:1> <peer key> 0x00 <protocol:1> <collapsed:1> <port:2 BE>
//	           edge value: workload, direction, peer, protocol, port, end port, collapsed and
//	           truncated flags, counts, first and last seen, DNS names, HTTP samples (binary)
//	           (peer key: "workload:ns/labels", "entity:host", "fqdn:name", "cidr:ip/len";
//	           a collapsed edge has port 0 in its key, its range in the value)
//	journal    <batch number:8 BE> <edge key of the chunk's last entry>
//	           -> format:2, CRC-32C:4 of the rest, then entries in key order: bytes shared
//	              with the previous entry's key, the rest of the key (length-prefixed), bytes
//	              shared with the previous entry's value, the rest of the edge value
//	              (length-prefixed; an empty value deletes the edge) (chunks of about 64 KiB)
//	dns        <IP> -> {names, last}
//	lost       <node> -> {lost, last}
//	lifecycle  <workload key> -> opaque bytes owned by the audit lifecycle, which versions
//	           them; written through Commit's hook so they are committed with a batch
//	kept       <key> -> format:1, CRC-32C:4 of the rest, then opaque bytes another package
//	           keeps (Store.Keep: package replicas keeps the other replicas' last summaries);
//	           created by the first Keep, so a store without it is the same schema
//
// Open checks the file read-only before it writes anything, for read-only and read-write
// opens alike: a locked file (ErrLocked), an empty file (ErrNotStore), a file bbolt cannot read,
// truncated, or with a damaged page (ErrCorrupt), a bbolt file without our meta (ErrNotStore)
// or from a newer schema (ErrSchema) is reported with its path and the fix, and left untouched,
// never recreated. The integrity check reads every record and verifies the checksum of every
// chunk of the journal and the edge tree (bbolt reads a large value as raw bytes); up to 256 MiB it also runs bbolt's
// tx.Check (about 0.6 s for 186 MiB, BenchmarkOpenCheck). bbolt panics or faults on a damaged
// page; every access goes through Store.guard, which turns that into ErrCorrupt and marks the
// store failed: it is never written again (ErrFailed). An older schema is migrated by the
// steps in migrations, in the write transaction that records the new version: schema 1 (edge
// values in JSON) becomes 2 by rewriting every edge, 2 becomes 3 by adding the empty journal,
// and 3 becomes 4 by writing the tree and the journal merged as the tree's chunks. Read-only
// opens refuse an older schema until a write migrated it.
//
// # Compaction
//
// bbolt never shrinks its file: pages freed by retention are reused, not returned. After a
// large expiry, `recommender compact` (Compact) rewrites the live data into a new file, the
// journal folded into the edge tree.
//
// # Snapshots between processes
//
// Merge combines the snapshots of replicas that read disjoint nodes (issue 19.3).
// Snapshot.MarshalBinary is the form they travel in (snapcodec.go): each workload key and peer
// once, edges by index, about 70 bytes per edge against 800 as JSON. UnmarshalBinary trusts
// nothing it is sent: what no Aggregator would build fails with ErrSnapshot, and no count is
// believed beyond what the bytes left can hold.
//
// # Concurrency
//
// Aggregator and Store are safe for concurrent use. Store.Snapshot reads in one read
// transaction, consistent while commits go on. An Ingester's Run aggregates on one goroutine,
// receives from the source on a second and commits on a third, one commit at a time; Commit
// may be called from any goroutine, before, during or after Run, and is served by that
// committer while Run runs.
package aggregate
