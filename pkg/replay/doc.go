// Package replay is a stand-in for Hubble Relay: it serves recorded flows over the real
// Observer gRPC API (observer.ObserverServer on a grpc.Server), so the relay source, the
// hubble CLI and the benchmarks talk to it exactly as they would to a cluster. It backs
// `recommender relay`, the tests of pkg/flows' relay source and the ingest benchmarks.
//
// # What it serves
//
// A Recording is loaded once (flows.FileSource.RecvResponse keeps the raw GetFlowsResponse),
// decoded once and marshaled once; streams send the marshaled bytes. GetFlows honors number,
// first, follow, since, until and allow/deny FlowFilters with Hubble's semantics (since before
// number; lost-events notices pass every filter and do not count). The filters are this
// package's own (filter.go) because Cilium's pkg/hubble/filters drags a thousand packages
// along; unsupported filter fields are refused with InvalidArgument. field_mask is not
// applied: full flows are sent. ServerStatus and GetNodes describe the recording.
//
// # Options
//
// Rate releases records at a fixed rate from server start, like live traffic. Loop replays
// forever, shifting each pass forward in time so flow time keeps increasing. Follow keeps
// follow streams open after the recording ends.
//
// # Lifecycle
//
// A Server can Start, Stop (dropping every stream, like a relay pod dying) and Start again on
// the same address; tests use this to check that clients resume without loss or duplicates.
// Drain is the reference consumer: receive and decode only.
//
// # Peer service
//
// PeerServer stands in for Hubble's Peer service (observer.Peer/Notify, what Relay discovers
// nodes with): tests run one replay Server per node and announce, update and delete them
// while flows.NodesSource follows.
//
// It does not own normalization (pkg/flows) and never imports anything beyond pkg/flows and
// the observer/flow/peer protobufs.
package replay
