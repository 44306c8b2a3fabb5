package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/pflag"

	"github.com/recommender/recommender/pkg/synth"
)

// synthOptions are the synthesis flags shared by `recommend` and `run`.
type synthOptions struct {
	minFlows   uint64
	minObserve time.Duration
	l7         []string
	cidrPrefix int
	cidrV4     int
	cidrV6     int
	cluster    string
	quiet      string
	dnsDeep    bool
	policyLog  bool
	kind       string
}

// flagPolicyKind names the kind proposals are written as; run hands it to delivery too.
const flagPolicyKind = "policy-kind"

func (o *synthOptions) addFlags(f *pflag.FlagSet) {
	d := synth.DefaultConfig()
	f.Uint64Var(&o.minFlows, "min-flows", d.MinFlows, "skip workloads observed in fewer flows")
	f.DurationVar(&o.minObserve, "min-observe", d.MinObserve, "skip workloads whose first and last observation are closer than this")
	f.StringSliceVar(&o.l7, "l7", nil, `L7 rules to write where the proxy saw them: "http" (method and path)`)
	f.IntVar(&o.cidrPrefix, "cidr-prefix", 0, "prefix length for unnamed external IPv4 addresses (shorthand for --cidr-prefix-v4)")
	f.IntVar(&o.cidrV4, "cidr-prefix-v4", d.CIDRPrefixV4, "prefix length unnamed external IPv4 addresses are summarized to")
	f.IntVar(&o.cidrV6, "cidr-prefix-v6", d.CIDRPrefixV6, "prefix length unnamed external IPv6 addresses are summarized to")
	f.StringVar(&o.cluster, "cluster-name", d.ClusterName, "Cilium cluster name (cluster.name): policies are proposed for this cluster's workloads and peers are selected by cluster; empty takes it from the flows, and is an error for flows of a ClusterMesh (docs/clustermesh.md)")
	f.BoolVar(&o.dnsDeep, "dns-subdomain-wildcard", false, `the target Cilium is 1.19 or newer: names resolved in several subdomains of one domain may become a "**." DNS pattern (older agents would not match them)`)
	f.BoolVar(&o.policyLog, "policy-log", d.PolicyLog, `write spec.log (the policy's name, at most 32 characters) on generated policies: Hubble's policy_log then names the policy on the flows it allows; needs Cilium 1.18+ CRDs and changes every revision (docs/clustermesh.md)`)
	f.StringVar(&o.kind, flagPolicyKind, string(d.PolicyKind), `write policies as "CiliumClusterwideNetworkPolicy" or "CiliumNetworkPolicy" (one per workload in its namespace, written as NAMESPACE/NAME.yaml; peers in other namespaces keep their meaning)`)
	f.StringVar(&o.quiet, "quiet-directions", string(d.QuietDirections), `a direction in which a proposed workload was never seen talking: "deny" (default deny, nothing allowed) or "open" (no rules, unrestricted)`)
}

// config validates the flags and returns the synthesis config; changed reports whether a
// flag was set on the command line.
func (o *synthOptions) config(changed func(string) bool) (synth.Config, error) {
	cfg := synth.DefaultConfig()
	for _, l := range o.l7 {
		if l != "http" {
			return cfg, fmt.Errorf("--l7 %q: only http is supported", l)
		}
		cfg.L7HTTP = true
	}
	cfg.MinFlows, cfg.MinObserve = o.minFlows, o.minObserve
	cfg.CIDRPrefixV4, cfg.CIDRPrefixV6 = o.cidrV4, o.cidrV6
	cfg.ClusterName = o.cluster
	cfg.QuietDirections = synth.QuietMode(o.quiet)
	cfg.DNSSubdomainWildcard = o.dnsDeep
	cfg.PolicyLog = o.policyLog
	cfg.PolicyKind = synth.PolicyKind(o.kind)
	if changed("cidr-prefix") {
		if changed("cidr-prefix-v4") {
			return cfg, errors.New("--cidr-prefix and --cidr-prefix-v4 exclude each other")
		}
		cfg.CIDRPrefixV4 = o.cidrPrefix
	}
	return cfg, cfg.Validate()
}
