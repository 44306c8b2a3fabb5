package synth

import (
	"errors"
	"fmt"
	"regexp"
	"time"
)

// clusterNameChars is what Cilium accepts as cluster.name (pkg/clustermesh/types
// ValidateClusterName): lower case alphanumerics and '-', starting and ending alphanumeric.
var clusterNameChars = regexp.MustCompile(`^([a-z0-9][-a-z0-9]{0,30})?[a-z0-9]$`)

// Config controls synthesis. Field names follow the recommend command's flags.
type Config struct {
	// MinFlows is the least number of observations a workload needs before it gets a
	// policy (--min-flows).
	MinFlows uint64
	// MinObserve is the least time between a workload's first and last observation
	// (--min-observe).
	MinObserve time.Duration
	// L7HTTP adds rules.http (method and path) to ingress ports where HTTP was seen (--l7 http).
	L7HTTP bool
	// CIDRPrefixV4 and CIDRPrefixV6 are the prefix lengths external addresses without a
	// name are summarized to (--cidr-prefix-v4, --cidr-prefix-v6).
	CIDRPrefixV4 int
	CIDRPrefixV6 int
	// ClusterName is the Cilium cluster (cluster.name) the policies are proposed for
	// (--cluster-name). Empty takes it from the flows when all their workloads name one
	// cluster; flows of several clusters (a ClusterMesh) without it are an error
	// (ErrClusterMesh). Only workloads of this cluster get policies, and peer selectors name
	// their cluster explicitly (see docs/clustermesh.md).
	ClusterName string
	// QuietDirections decides what a proposed policy says about a direction in which the
	// workload was never seen talking (--quiet-directions): QuietDeny closes it (default deny,
	// nothing allowed), QuietOpen leaves it without rules and so unrestricted.
	QuietDirections QuietMode
	// DNSSubdomainWildcard allows "**." DNS patterns, which match one or more labels
	// (--dns-subdomain-wildcard). Only Cilium 1.19 and newer support them; never on by default.
	DNSSubdomainWildcard bool
	// PolicyLog sets spec.log.value on every generated policy to LogValue of its name
	// (--policy-log). Cilium 1.18 and newer copy it into the policy_log of the Hubble flows
	// a rule of the policy allowed. Off by default: the CRDs of older agents do not declare
	// the field, every flow the policy allows carries the value, and it changes every
	// revision (docs/clustermesh.md, "Drop attribution").
	PolicyLog bool
	// PolicyKind is the kind proposals are written as (--policy-kind): KindCCNP (also the
	// zero value) or KindCNP, one CiliumNetworkPolicy in each workload's namespace. Synthesis
	// is the same for both; with KindCNP every proposal is also checked by Cilium's CNP parser.
	PolicyKind PolicyKind
}

// QuietMode is what a policy does with a direction that had no observed traffic.
type QuietMode string

const (
	// QuietDeny writes an empty rule (ingress: [{}] or egress: [{}]) for the direction: Cilium
	// puts the endpoint in default deny there and allows nothing. A CronJob nobody calls
	// then cannot be reached, and a server that never dials out cannot reach the API server
	// or the internet once compromised (issue 14).
	QuietDeny QuietMode = "deny"
	// QuietOpen writes nothing for the direction, which leaves it unrestricted.
	QuietOpen QuietMode = "open"
)

// DefaultConfig returns the defaults of the recommend command.
func DefaultConfig() Config {
	return Config{
		MinFlows:     1,
		CIDRPrefixV4: 32,
		CIDRPrefixV6: 128,

		QuietDirections: QuietDeny,
		PolicyKind:      KindCCNP,
	}
}

// Validate reports configuration errors before anything runs.
func (c Config) Validate() error {
	var errs []error
	if c.MinObserve < 0 {
		errs = append(errs, fmt.Errorf("--min-observe %s: must not be negative", c.MinObserve))
	}
	// A short prefix would turn one observed address into a large share of the internet;
	// /8 and /32 for IPv6 are already generous upper bounds for a reviewed fallback.
	if c.CIDRPrefixV4 < 8 || c.CIDRPrefixV4 > 32 {
		errs = append(errs, fmt.Errorf("--cidr-prefix-v4 %d: want 8..32", c.CIDRPrefixV4))
	}
	if c.CIDRPrefixV6 < 32 || c.CIDRPrefixV6 > 128 {
		errs = append(errs, fmt.Errorf("--cidr-prefix-v6 %d: want 32..128", c.CIDRPrefixV6))
	}
	if c.QuietDirections != QuietDeny && c.QuietDirections != QuietOpen {
		errs = append(errs, fmt.Errorf("--quiet-directions %q: want %s or %s", c.QuietDirections, QuietDeny, QuietOpen))
	}
	if c.ClusterName != "" && !clusterNameChars.MatchString(c.ClusterName) {
		errs = append(errs, fmt.Errorf("--cluster-name %q: want lower case letters, digits and '-', at most 32 characters, as Cilium's cluster.name", c.ClusterName))
	}
	if err := c.PolicyKind.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
