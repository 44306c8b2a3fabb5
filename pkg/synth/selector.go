package synth

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"slices"
	"strings"

	slim_metav1 "github.com/cilium/cilium/pkg/k8s/slim/k8s/apis/meta/v1"
	"github.com/cilium/cilium/pkg/policy/api"

	"github.com/recommender/recommender/pkg/aggregate"
	"github.com/recommender/recommender/pkg/flows"
)

// namespaceKey is the selector key Cilium gives a pod's namespace.
const namespaceKey = "k8s:" + flows.LabelNamespace

// preferredKeys are the label keys tried first for a selector, best first: they name the
// application and survive upgrades.
var preferredKeys = []string{"app.kubernetes.io/name", "app", "k8s-app", "app.kubernetes.io/component", "app.kubernetes.io/instance", "name", "component"}

// neverSelect matches label keys that must not appear in a selector even when the upstream
// label filter let them through: they change on upgrades or identify a chart release.
var neverSelect = regexp.MustCompile(`(^|[./])version$|^helm\.sh/chart$|^chart$|^heritage$|^app\.kubernetes\.io/managed-by$`)

// maxSubsetLabels bounds the exhaustive search for the smallest unique label subset; a
// workload with more candidate labels is selected by all of them.
const maxSubsetLabels = 12

type parsedLabel struct {
	raw   string // "k8s:app=web"
	key   string // selector key, with source: "k8s:app"
	bare  string // key without source: "app"
	value string
	rank  int
}

func parseLabel(l string) parsedLabel {
	src, kv := flows.SplitSource(l)
	k, v, _ := strings.Cut(kv, "=")
	p := parsedLabel{raw: l, key: k, bare: k, value: v, rank: len(preferredKeys)}
	if src != "" {
		p.key = src + ":" + k
	}
	if i := slices.Index(preferredKeys, k); i >= 0 {
		p.rank = i
	}
	return p
}

// eligible reports whether a label may appear in a selector. Churny labels were already
// removed by the user's label filter upstream (which may deliberately include some);
// version and chart labels are removed here whatever that filter says.
// The cluster label is never chosen to tell workloads apart: endpointSelector adds it on its own.
func eligible(p parsedLabel) bool {
	return !neverSelect.MatchString(p.bare) && p.bare != flows.LabelNamespace && p.bare != flows.LabelCluster
}

// selectorChoice is the selector chosen for a workload.
type selectorChoice struct {
	match   []parsedLabel // labels in matchLabels, besides the namespace
	absent  []string      // keys required to be absent (DoesNotExist)
	overlap []string      // other workloads that the label set alone would also select
	shared  bool          // some of them differ only in never-selected labels and stay selected
	// sharedWith are the label sets of those workloads: only a version or chart label tells
	// them apart.
	sharedWith []flows.Labels
	// kept are the never-selected labels (or "!key" for DoesNotExist) added to a subject
	// selector to tell apart workloads of sharedWith seen at the same time.
	kept []string
}

// universe holds the label sets of every workload observed, per cluster and namespace: a
// selector names both, so only workloads of the same cluster and namespace compete for it.
type universe map[string][]flows.Labels

// scope is the universe key of a workload; labels naming no cluster are the local cluster's.
func scope(local string, w aggregate.WorkloadKey) string {
	return cmp.Or(w.Labels.Cluster(), local) + "\x00" + w.Namespace
}

func (u universe) add(local string, w aggregate.WorkloadKey) {
	k := scope(local, w)
	for _, have := range u[k] {
		if slices.Equal(have, w.Labels) {
			return
		}
	}
	u[k] = append(u[k], w.Labels)
}

// contains reports whether every label in sub is in set.
func contains(set flows.Labels, sub []parsedLabel) bool {
	for _, p := range sub {
		if !slices.Contains(set, p.raw) {
			return false
		}
	}
	return true
}

// choose picks the smallest set of eligible labels of w that selects no other observed
// workload of its namespace, preferring well-known application keys. It fails when the
// workload has no eligible label.
func (u universe) choose(local string, w aggregate.WorkloadKey) (selectorChoice, error) {
	var cands []parsedLabel
	for _, l := range w.Labels {
		if p := parseLabel(l); eligible(p) {
			cands = append(cands, p)
		}
	}
	if len(cands) == 0 {
		return selectorChoice{}, fmt.Errorf("none of the labels %q can identify the workload", w.Labels.String())
	}
	slices.SortFunc(cands, func(a, b parsedLabel) int {
		return cmp.Or(cmp.Compare(a.rank, b.rank), cmp.Compare(a.raw, b.raw))
	})
	var others []flows.Labels
	for _, o := range u[scope(local, w)] {
		if !slices.Equal(o, w.Labels) {
			others = append(others, o)
		}
	}
	unique := func(sub []parsedLabel) bool {
		for _, o := range others {
			if contains(o, sub) {
				return false
			}
		}
		return true
	}
	if len(cands) <= maxSubsetLabels {
		// Subsets by size, then in preference order: the first unique one wins.
		for size := 1; size <= len(cands); size++ {
			if sub := firstSubset(cands, size, unique); sub != nil {
				return selectorChoice{match: sub}, nil
			}
		}
	} else if unique(cands) {
		return selectorChoice{match: cands}, nil
	}
	// Another workload carries all of w's selectable labels plus more: exclude it by an
	// eligible key it has and w lacks. A workload that differs from w only in labels that are
	// never selected (versions) cannot be told apart; both share the selector, which is
	// harmless (policies add up) and flagged.
	choice := selectorChoice{match: cands}
	have := map[string]bool{}
	for _, l := range w.Labels {
		have[parseLabel(l).key] = true
	}
	for _, o := range others {
		if !contains(o, cands) {
			continue
		}
		var extra []parsedLabel
		for _, l := range o {
			if p := parseLabel(l); !have[p.key] && eligible(p) {
				extra = append(extra, p)
			}
		}
		choice.overlap = append(choice.overlap, w.Namespace+"/"+o.Short())
		if len(extra) == 0 {
			choice.shared = true
			choice.sharedWith = append(choice.sharedWith, o)
			continue
		}
		slices.SortFunc(extra, func(a, b parsedLabel) int {
			return cmp.Or(cmp.Compare(a.rank, b.rank), cmp.Compare(a.key, b.key))
		})
		choice.absent = append(choice.absent, extra[0].key)
	}
	slices.Sort(choice.absent)
	choice.absent = slices.Compact(choice.absent)
	return choice, nil
}

// versionKey matches the never-selected keys that name a version; they are the first choice
// to tell co-existing workloads apart (Istio's version: v1|v2|v3 canaries).
var versionKey = regexp.MustCompile(`(^|[./])version$`)

// separate narrows a subject selector so that it no longer selects the workloads of
// c.sharedWith for which coexists holds: workloads that differ only in a never-selected label
// (version, chart) and ran at the same time, such as canary versions of one Deployment. Each
// would otherwise get the union of the others' rules. The label that tells them apart is
// kept on the subject only; peers stay selected by the general selector, since a client that
// reaches the Service reaches every version. Workloads seen one after the other (a rollout
// that changed the label) keep sharing the selector, so the new version stays covered.
func (c selectorChoice) separate(wk aggregate.WorkloadKey, coexists func(flows.Labels) bool) selectorChoice {
	w := wk.Labels
	var rest []flows.Labels
	for _, o := range c.sharedWith {
		if !coexists(o) {
			rest = append(rest, o)
			continue
		}
		c.overlap = slices.DeleteFunc(slices.Clone(c.overlap), func(s string) bool { return s == wk.Namespace+"/"+o.Short() })
		if !c.selects(o) {
			continue // an earlier label already excludes it
		}
		if p, ok := distinguishing(w, o); ok {
			c.match = append(c.match, p)
			c.kept = append(c.kept, p.bare+"="+p.value)
		} else if k, ok := distinguishing(o, w); ok {
			c.absent = append(c.absent, k.key)
			c.kept = append(c.kept, "!"+k.bare)
		}
	}
	slices.Sort(c.absent)
	c.absent = slices.Compact(c.absent)
	c.sharedWith = rest
	c.shared = len(rest) > 0
	return c
}

// selects reports whether the choice selects a workload with labels l.
func (c selectorChoice) selects(l flows.Labels) bool {
	if !contains(l, c.match) {
		return false
	}
	for _, k := range c.absent {
		for _, x := range l {
			if parseLabel(x).key == k {
				return false
			}
		}
	}
	return true
}

// distinguishing returns a never-selected label of w that o lacks, version keys first.
func distinguishing(w, o flows.Labels) (parsedLabel, bool) {
	var best parsedLabel
	found := false
	for _, l := range w {
		p := parseLabel(l)
		if eligible(p) || p.bare == flows.LabelNamespace || slices.Contains(o, l) {
			continue
		}
		if !found || (versionKey.MatchString(p.bare) && !versionKey.MatchString(best.bare)) {
			best, found = p, true
		}
	}
	return best, found
}

// firstSubset returns the first subset of cands of the given size (in lexicographic order of
// indexes, so preferred labels come first) for which ok holds.
func firstSubset(cands []parsedLabel, size int, ok func([]parsedLabel) bool) []parsedLabel {
	idx := make([]int, size)
	for i := range idx {
		idx[i] = i
	}
	for {
		sub := make([]parsedLabel, size)
		for i, j := range idx {
			sub[i] = cands[j]
		}
		if ok(sub) {
			return sub
		}
		// Advance to the next combination.
		i := size - 1
		for i >= 0 && idx[i] == len(cands)-size+i {
			i--
		}
		if i < 0 {
			return nil
		}
		idx[i]++
		for j := i + 1; j < size; j++ {
			idx[j] = idx[j-1] + 1
		}
	}
}

// clusterKey is the selector key of the cluster an endpoint runs in.
const clusterKey = "k8s:" + flows.LabelCluster

// endpointSelector renders the choice as a Cilium selector including the namespace, and the
// cluster when one is given. Peer selectors always name their cluster when it is known, the
// local one included (issue 16): Cilium 1.19+ reads a selector without a cluster as the local
// cluster, 1.18 and older (policy-default-local-cluster=false) as every cluster of the mesh,
// and only an explicit cluster means the same on both. Subject selectors get none: a policy
// only ever applies to endpoints of the cluster it is loaded into.
func (c selectorChoice) endpointSelector(ns, cluster string) api.EndpointSelector {
	ml := map[string]string{namespaceKey: ns}
	if cluster != "" {
		ml[clusterKey] = cluster
	}
	for _, p := range c.match {
		ml[p.key] = p.value
	}
	var reqs []slim_metav1.LabelSelectorRequirement
	for _, k := range c.absent {
		reqs = append(reqs, slim_metav1.LabelSelectorRequirement{Key: k, Operator: slim_metav1.LabelSelectorOpDoesNotExist})
	}
	return api.NewESFromMatchRequirements(ml, reqs)
}

// maxNameLen keeps generated names short enough to read and to use as label values.
const maxNameLen = 63

var invalidNameChars = regexp.MustCompile(`[^a-z0-9-]+`)

// sanitizeName turns s into a DNS-1123 label: lower case, [a-z0-9-], at most maxNameLen.
func sanitizeName(s string) string {
	s = invalidNameChars.ReplaceAllString(strings.ToLower(s), "-")
	s = strings.Trim(s, "-")
	if len(s) > maxNameLen {
		s = strings.TrimRight(s[:maxNameLen-7], "-") + "-" + shortHash(s)
	}
	if s == "" {
		s = "workload"
	}
	return s
}

func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])[:6]
}

// workloadName is the human name of a workload: its owner's name if Hubble reported one,
// else the value of its best application label.
func workloadName(w aggregate.WorkloadKey, owners []string) string {
	if len(owners) > 0 {
		o := slices.Sorted(slices.Values(owners))[0]
		if i := strings.LastIndexByte(o, '/'); i >= 0 {
			o = o[i+1:]
		}
		if o != "" {
			return o
		}
	}
	best := parsedLabel{rank: len(preferredKeys) + 1}
	for _, l := range w.Labels {
		if p := parseLabel(l); eligible(p) && (p.rank < best.rank || (p.rank == best.rank && p.raw < best.raw)) {
			best = p
		}
	}
	if best.value != "" {
		return best.value
	}
	return "workload-" + shortHash(w.String())
}

// assignNames gives each proposal the name <namespace>-<workload>; names that collide get a
// short hash of the workload key, so every name is unique and independent of input order.
func assignNames(ps []*Proposal, owners map[string][]string) {
	base := make([]string, len(ps))
	count := map[string]int{}
	for i, p := range ps {
		base[i] = sanitizeName(p.Workload.Namespace + "-" + workloadName(p.Workload, owners[p.Workload.String()]))
		count[base[i]]++
	}
	for i, p := range ps {
		p.Name = base[i]
		if count[base[i]] > 1 {
			h := shortHash(p.Workload.String())
			if len(p.Name) > maxNameLen-7 {
				p.Name = strings.TrimRight(p.Name[:maxNameLen-7], "-")
			}
			p.Name += "-" + h
		}
	}
}
