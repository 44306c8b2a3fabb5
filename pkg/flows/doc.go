// Package flows reads Hubble flows and turns each record into one normalized Event, the type
// every later stage consumes. It owns the sources (Hubble Relay over gRPC: RelaySource; every
// node's Hubble server, discovered through Hubble's Peer service: NodesSource; recordings:
// FileSource), the Normalizer, and the Folder that delivers a connection observed
// at both ends once. It does not aggregate (pkg/aggregate) and imports neither cilium.io/v2 nor
// pkg/policy: the observer and flow protobufs stop here.
//
// # Normalization
//
// Src is always the client and Dst the server, decided from is_reply (or the deprecated
// reply), TCP flags and ports, never from traffic_direction alone. Labels are reduced to the
// stable set (LabelFilter), which keeps the cluster label (k8s:io.cilium.k8s.policy.cluster):
// in a ClusterMesh it tells two clusters' workloads apart. Reserved identities become entities; identity 1 opening a
// connection is the host even when it also carries reserved:kube-apiserver (kubelet probes).
// Records without event_type get their kind from the fields present (exporter field masks).
//
// # Skipped records
//
// Every record that yields no Event is counted by SkipReason in Stats, so an empty result can
// always say why. An end that is a pod known only by namespace and pod name (a field mask
// without labels, or a pod the proxy reported as reserved:world) is resolved through a
// PodResolver when one is set and refused otherwise (SkipNoIdentity, the pod named by
// Normalizer.Unresolved): no selector or /32 rule is ever guessed for it.
//
// # L7
//
// An L7 request with no L3/L4 record of its connection within FoldWindow stands for its
// connection (Event.Connection), so captures of L7 events alone give edges; responses never do.
//
// # Relay decoding
//
// The relay source decodes only the fields the Normalizer reads (WireFields), straight from
// the wire into messages reused from record to record, and decodes a record in full when it
// has anything the fast path does not handle (wire.go). The Normalizer must therefore not
// keep pointers into a Flow after it returns; the tests in wire_test.go fail when it reads a
// field outside WireFields or keeps such a pointer. A record that does not decode is counted
// as malformed and skipped; the stream goes on.
//
// # Reading the nodes
//
// NodesSource does what Hubble Relay does, inside the daemon (issue 19): it follows the Peer
// service's announcements (observer.Peer/Notify) and reads each node's Observer API with one
// RelaySource per node, with the TLS options of the relay flags and the server name each
// node is announced with. An Assignment splits the nodes among replicas (assign.go); a node
// new to this replica can start at a cursor (NodesConfig.Start) so what another replica
// stored is not read again. Node streams are merged in arrival order; Stats sum the nodes.
//
// # Recordings
//
// FileSource reads `hubble observe -o jsonpb` lines, bare Flow objects, pretty-printed
// multi-line JSON, gzip, a UTF-8 byte-order mark, and records without time. Malformed records
// are LineErrors (file:line) with FileConfig.Strict, counted and logged otherwise; a file of
// which nothing is readable is an error either way.
package flows
