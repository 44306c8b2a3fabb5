package cluster

import "fmt"

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
}

// DefaultConfig is what the flags default to.
func DefaultConfig() Config {
	return Config{Apply: ApplyOff, DryRun: DryRunNone}
}

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
	return nil
}

// admits reports whether a policy at the given lifecycle stage may be in
// the cluster.
func (c Config) admits(promoted bool) bool {
	return promoted || c.ClusterAuditMode
}
