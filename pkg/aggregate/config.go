package aggregate

import (
	"errors"
	"fmt"
)

// Config bounds what the Aggregator keeps. Zero fields take the defaults of DefaultConfig.
type Config struct {
	// MaxPorts is how many distinct ports one (workload, direction, peer, protocol) may have as
	// separate edges. One more folds them into a single Collapsed range edge, flagged for review:
	// scanners and ephemeral-port protocols must not become thousands of rules (PITFALLS #3).
	MaxPorts int
	// MaxWorkloads caps the workloads kept; observations of further workloads are counted as
	// overflow and dropped.
	MaxWorkloads int
	// MaxEdges caps the edges kept; observations that would add an edge are counted as overflow.
	MaxEdges int
	// MaxWorldPeers is how many distinct CIDR peers one (workload, direction) may have. Further
	// unnamed external addresses are folded into the entity "world": a public service has as many
	// client addresses as the internet, and none of them belongs in a rule.
	MaxWorldPeers int
	// MaxDNSNames bounds the names kept per edge to a DNS server.
	MaxDNSNames int
	// MaxHTTPSamples bounds the samples kept per edge: distinct methods and path shapes
	// (flows.HTTPPathShape), not distinct paths.
	MaxHTTPSamples int
	// MaxDNSAnswers bounds the IP -> names map learned from DNS answers; the entries seen least
	// recently are evicted first.
	MaxDNSAnswers int
	// MaxNamesPerIP bounds the names one IP keeps in the DNS answer map.
	MaxNamesPerIP int
	// MaxWorkloadsPerNamespace caps the workloads of one namespace, so that one namespace
	// flooding new identities cannot take the whole MaxWorkloads budget. Zero: a quarter of
	// MaxWorkloads, but at least 250 (all of a smaller budget).
	MaxWorkloadsPerNamespace int
	// MaxEdgesPerWorkload caps the edges of one workload, for the same reason. Zero: a
	// twentieth of MaxEdges, but at least 2,500 (all of a smaller budget).
	MaxEdgesPerWorkload int
	// MaxLabelValues is how many distinct values a label key may take within one workload
	// (same namespace, owner and other labels) before it counts as churning and is dropped
	// from the identity. Zero: 8.
	MaxLabelValues int
}

// DefaultConfig returns the bounds used when a Config field is zero.
func DefaultConfig() Config {
	return Config{
		MaxPorts:       32,
		MaxWorkloads:   10_000,
		MaxEdges:       250_000,
		MaxWorldPeers:  256,
		MaxDNSNames:    64,
		MaxHTTPSamples: 32,
		MaxDNSAnswers:  65_536,
		MaxNamesPerIP:  8,
		// A quarter and a twentieth of the budgets above, as withDefaults derives them.
		MaxWorkloadsPerNamespace: 2_500,
		MaxEdgesPerWorkload:      12_500,
		MaxLabelValues:           8,
	}
}

// Validate rejects negative bounds.
func (c *Config) Validate() error {
	var errs []error
	for _, f := range []struct {
		name string
		v    int
	}{
		{"max-ports", c.MaxPorts}, {"max-workloads", c.MaxWorkloads}, {"max-edges", c.MaxEdges},
		{"max-world-peers", c.MaxWorldPeers}, {"max-dns-names", c.MaxDNSNames},
		{"max-http-samples", c.MaxHTTPSamples}, {"max-dns-answers", c.MaxDNSAnswers},
		{"max-names-per-ip", c.MaxNamesPerIP}, {"max-workloads-per-namespace", c.MaxWorkloadsPerNamespace},
		{"max-edges-per-workload", c.MaxEdgesPerWorkload}, {"max-label-values", c.MaxLabelValues},
	} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("%s %d: must not be negative", f.name, f.v))
		}
	}
	return errors.Join(errs...)
}

// withDefaults fills zero fields from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	for _, p := range []struct{ v, d *int }{
		{&c.MaxPorts, &d.MaxPorts}, {&c.MaxWorkloads, &d.MaxWorkloads}, {&c.MaxEdges, &d.MaxEdges},
		{&c.MaxWorldPeers, &d.MaxWorldPeers}, {&c.MaxDNSNames, &d.MaxDNSNames},
		{&c.MaxHTTPSamples, &d.MaxHTTPSamples}, {&c.MaxDNSAnswers, &d.MaxDNSAnswers},
		{&c.MaxNamesPerIP, &d.MaxNamesPerIP}, {&c.MaxLabelValues, &d.MaxLabelValues},
	} {
		if *p.v == 0 {
			*p.v = *p.d
		}
	}
	if c.MaxWorkloadsPerNamespace == 0 {
		c.MaxWorkloadsPerNamespace = fairShare(c.MaxWorkloads, 4, 250)
	}
	if c.MaxEdgesPerWorkload == 0 {
		c.MaxEdgesPerWorkload = fairShare(c.MaxEdges, 20, 2_500)
	}
	return c
}

// fairShare is budget/parts, but at least floor (or the whole budget when it is smaller):
// sharing matters once the budget is large enough to share.
func fairShare(budget, parts, floor int) int {
	return max(budget/parts, min(budget, floor))
}
