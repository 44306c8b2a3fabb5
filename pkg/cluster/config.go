package cluster

import (
	"errors"
	"fmt"
	"slices"

	"github.com/recommender/recommender/pkg/synth"
)

// ApplyMode says whether Sync writes to the cluster (flag --apply).
type ApplyMode string

const (
	// ApplyOff only proposes: nothing is written.
	ApplyOff ApplyMode = "off"
	// ApplyEnforce writes the desired policies.
	ApplyEnforce ApplyMode = "enforce"
)

// DryRunMode mirrors kubectl's --dry-run values this package supports.
type DryRunMode string

const (
	// DryRunNone persists writes.
	DryRunNone DryRunMode = "none"
	// DryRunServer sends every write with dryRun=All: the API server
	// validates and admits it but persists nothing.
	DryRunServer DryRunMode = "server"
)

// Config holds the flags of cluster delivery; fields are named after them.
type Config struct {
	// Apply is --apply.
	Apply ApplyMode
	// ClusterAuditMode is --cluster-audit-mode: Cilium runs in
	// policy-audit-mode, so policies still in audit may be applied.
	ClusterAuditMode bool
	// DryRun is --dry-run.
	DryRun DryRunMode
	// ForceConflicts is --force-conflicts: take back a policy of ours that
	// another field manager changed. Off, such drift is reported and left.
	ForceConflicts bool
	// MaxPruneRatio is --max-prune-ratio: one Sync deletes at most this
	// fraction of the policies we own (and always at most one more than
	// zero), or none at all. A store that lost its memory retires
	// everything at once; a healthy one retires a few at a time.
	MaxPruneRatio float64
	// PolicyKind is --policy-kind: synth.KindCCNP (also the zero value) writes
	// CiliumClusterwideNetworkPolicies, synth.KindCNP one CiliumNetworkPolicy
	// per workload in the workload's namespace, with the same ownership rules.
	PolicyKind synth.PolicyKind
	// Namespaces is --namespace with synth.KindCNP: Sync lists, writes,
	// adopts and prunes CNPs in these namespaces only, with namespaced rights
	// (deploy/namespaced). Empty: every namespace (a cluster-wide list).
	Namespaces []string
}

// DefaultConfig is what the flags default to.
func DefaultConfig() Config {
	return Config{Apply: ApplyOff, DryRun: DryRunNone, MaxPruneRatio: DefaultMaxPruneRatio}
}

// DefaultMaxPruneRatio is --max-prune-ratio's default.
const DefaultMaxPruneRatio = 0.1

// Validate checks the values before anything starts.
func (c Config) Validate() error {
	switch c.Apply {
	case ApplyOff, ApplyEnforce:
	default:
		return fmt.Errorf("--apply %q: want off or enforce", c.Apply)
	}
	switch c.DryRun {
	case DryRunNone, DryRunServer:
	default:
		return fmt.Errorf("--dry-run %q: want none or server", c.DryRun)
	}
	if c.MaxPruneRatio < 0 || c.MaxPruneRatio > 1 {
		return fmt.Errorf("--max-prune-ratio %g: must be within [0, 1]", c.MaxPruneRatio)
	}
	if err := c.PolicyKind.Validate(); err != nil {
		return err
	}
	if len(c.Namespaces) > 0 && !c.PolicyKind.Namespaced() {
		return errors.New("--namespace with delivery needs --policy-kind CiliumNetworkPolicy: CCNPs are cluster-scoped")
	}
	if slices.Contains(c.Namespaces, "") {
		return errors.New("--namespace: empty namespace name")
	}
	return nil
}

// inScope reports whether Sync may touch policies in namespace ns.
func (c Config) inScope(ns string) bool {
	return len(c.Namespaces) == 0 || slices.Contains(c.Namespaces, ns)
}

// pruneLimit is how many of owned policies one Sync may delete: the ratio's
// share, rounded down, but at least one, so a small installation can still
// retire a workload.
func (c Config) pruneLimit(owned int) int {
	return max(1, int(c.MaxPruneRatio*float64(owned)))
}

// admits reports whether a policy at the given lifecycle stage may be in
// the cluster.
func (c Config) admits(promoted bool) bool {
	return promoted || c.ClusterAuditMode
}
