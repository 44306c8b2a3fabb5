package aggregate

import (
	"hash/maphash"
	"slices"
	"strings"

	"github.com/recommender/recommender/pkg/flows"
)

// ChurningLabel is a label key whose values kept changing within one workload, so it was
// dropped from that workload's identity: a selector on it would stop matching at the next
// change, and every new value would be a new workload (issue 15.6).
type ChurningLabel struct {
	Namespace string
	// Owner is the workload owner Hubble reported ("Deployment/web").
	Owner string
	// Key is the label key with its source ("k8s:version").
	Key string
}

// churn detects churning labels. It groups the identities it is shown by (namespace, owner,
// label key, all other labels): within one group only the value of that key differs. More than
// limit distinct values in a group mark the key as churning for (namespace, owner). The
// per-revision labels Cilium and flows already filter (pod-template-hash, ...) never reach it;
// this catches the ones nobody listed, such as a version label set per pod.
//
// Only identities with an owner are grouped: the pods of one Deployment differ in revision
// labels only, while workloads without one (bare pods, recordings without Hubble's workloads
// field) may well be distinct apps that differ in one label, and folding those would merge
// their policies into one broader selector. MaxWorkloadsPerNamespace bounds them instead.
//
// Memory is bounded: the groups map is cleared when it reaches maxChurnGroups (detection then
// restarts, it does not forget flagged keys), each group holds at most limit+1 value hashes,
// and at most maxChurningLabels keys are flagged.
type churn struct {
	limit    int
	seed     maphash.Seed
	groups   map[churnGroup][]uint64
	flagged  map[ChurningLabel]struct{}
	order    []ChurningLabel // flagged, in the order found
	newFound bool            // flagged changed since the last TakeBatch
}

type churnGroup struct {
	ChurningLabel
	rest uint64 // hash of the identity's other labels
}

const (
	maxChurnGroups    = 1 << 15
	maxChurningLabels = 1024
)

func newChurn(limit int) churn {
	return churn{limit: limit, seed: maphash.MakeSeed(), groups: make(map[churnGroup][]uint64), flagged: make(map[ChurningLabel]struct{})}
}

// labelKey returns "source:key" of "source:key=value".
func labelKey(l string) (key, value string) {
	k, v, _ := strings.Cut(l, "=")
	return k, v
}

// isNamespaceFact reports labels Cilium derives from the namespace or the cluster rather than
// from the pod: they are the same for every workload of a namespace.
func isNamespaceFact(key string) bool {
	_, k := flows.SplitSource(key)
	return strings.HasPrefix(k, "io.kubernetes.pod.namespace") || strings.HasPrefix(k, "io.cilium.k8s.")
}

// strip replaces p's labels with a copy without its churning keys, if it has any. It reports
// whether it changed them.
func (c *churn) strip(p *flows.Peer) bool {
	if len(c.flagged) == 0 {
		return false
	}
	drop := -1
	for i, l := range p.Labels {
		k, _ := labelKey(l)
		if _, ok := c.flagged[ChurningLabel{p.Namespace, p.Workload, k}]; ok {
			drop = i
			break
		}
	}
	if drop < 0 {
		return false
	}
	out := make(flows.Labels, 0, len(p.Labels)-1)
	out = append(out, p.Labels[:drop]...)
	for _, l := range p.Labels[drop+1:] {
		k, _ := labelKey(l)
		if _, ok := c.flagged[ChurningLabel{p.Namespace, p.Workload, k}]; !ok {
			out = append(out, l)
		}
	}
	p.Labels = out
	return true
}

// observe records a new identity and returns the label keys it found churning, now flagged.
func (c *churn) observe(p *flows.Peer) []ChurningLabel {
	if p.Workload == "" || len(p.Labels) < 2 || len(c.flagged) >= maxChurningLabels {
		return nil
	}
	var found []ChurningLabel
	for i, l := range p.Labels {
		k, v := labelKey(l)
		if isNamespaceFact(k) {
			continue
		}
		var h maphash.Hash
		h.SetSeed(c.seed)
		for j, o := range p.Labels {
			if j != i {
				h.WriteString(o)
				h.WriteByte(0)
			}
		}
		g := churnGroup{ChurningLabel{p.Namespace, p.Workload, k}, h.Sum64()}
		vh := maphash.String(c.seed, v)
		vals := c.groups[g]
		if slices.Contains(vals, vh) {
			continue
		}
		if len(c.groups) >= maxChurnGroups {
			clear(c.groups)
		}
		vals = append(vals, vh)
		c.groups[g] = vals
		if len(vals) > c.limit {
			delete(c.groups, g)
			if _, ok := c.flagged[g.ChurningLabel]; !ok {
				c.flag(g.ChurningLabel)
				found = append(found, g.ChurningLabel)
			}
		}
	}
	return found
}

func (c *churn) flag(l ChurningLabel) {
	c.flagged[l] = struct{}{}
	c.order = append(c.order, l)
	c.newFound = true
}
