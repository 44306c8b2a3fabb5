package flows

// SkipReason says why a Hubble record produced no Event. The empty reason means it was kept.
// The values are metric label values (recommender_flows_skipped_total{reason}) and appear in
// every summary the commands print; README's troubleshooting section explains each one.
type SkipReason string

const (
	SkipNone SkipReason = ""
	// SkipReply: the server-to-client half of a connection (is_reply, the deprecated reply,
	// SYN+ACK, or a well-known source port); the client's request already told who talks to
	// whom. Expected in every capture.
	SkipReply SkipReason = "reply"
	// SkipEventType: a monitor event that carries no policy evidence (debug, capture, sock
	// trace, ...). Expected when the capture was not filtered by type.
	SkipEventType SkipReason = "event_type"
	// SkipNoFlow: a record that is neither a flow nor a lost-events notice (node status).
	SkipNoFlow SkipReason = "not_a_flow"
	// SkipNoEndpoint: a flow with neither source nor destination (an exporter field mask
	// without them).
	SkipNoEndpoint SkipReason = "no_endpoints"
	// SkipNoL4: an L3/L4 flow without a known protocol and port (a field mask without l4).
	SkipNoL4 SkipReason = "no_l4"
	// SkipNoIdentity: an end is a pod named only by namespace and pod name (a field mask
	// without labels, or a pod the proxy reported as reserved:world) and no cluster lookup
	// resolved its labels. No selector is guessed for it; Normalizer.Unresolved names the pods.
	SkipNoIdentity SkipReason = "no_identity"
	// SkipDuplicate: the second observation of a connection (the other end's node, the
	// policy-verdict event of the same packet, or the proxy's record of an HTTP response to a
	// request just delivered), folded by Folder.
	SkipDuplicate SkipReason = "duplicate"
	// SkipResumed: a record delivered before a relay stream was resumed.
	SkipResumed SkipReason = "resumed"
)

// skipReasons lists every reason in the order summaries print them; Stats indexes its
// counters by position.
var skipReasons = [...]SkipReason{SkipReply, SkipDuplicate, SkipEventType, SkipNoFlow, SkipNoEndpoint, SkipNoL4, SkipNoIdentity, SkipResumed}

// SkipReasons returns every skip reason, in the order summaries print them.
func SkipReasons() []SkipReason { return skipReasons[:] }

func (r SkipReason) index() int {
	for i, x := range skipReasons {
		if x == r {
			return i
		}
	}
	return -1
}

// Describe says in a few words what the reason means and, when the capture can be fixed,
// how.
func (r SkipReason) Describe() string {
	switch r {
	case SkipReply:
		return "server-to-client half of a connection; its request is counted (expected)"
	case SkipDuplicate:
		return "second observation of a connection already counted (other node, the policy-verdict event of the same packet, or the HTTP response to a request; expected)"
	case SkipEventType:
		return "monitor event without policy evidence (debug, capture, sock); capture with --type trace --type drop --type policy-verdict --type l7"
	case SkipNoFlow:
		return "node status or another record that is not a flow (expected)"
	case SkipNoEndpoint:
		return "flow without source and destination: add source and destination to the exporter field mask"
	case SkipNoL4:
		return "L3/L4 flow without protocol and port: add l4 to the exporter field mask"
	case SkipNoIdentity:
		return "pod named only by namespace and pod name, labels unknown: add source.labels and destination.labels to the field mask, or let recommender read the pods from the cluster"
	case SkipResumed:
		return "already delivered before the relay stream was resumed (expected)"
	}
	return string(r)
}
