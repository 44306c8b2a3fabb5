package flows

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Labels is a canonical label set: sorted, deduplicated "source:key=value" strings as Cilium
// writes identity labels ("k8s:app=web"). Two workloads with the same Labels are the same workload.
type Labels []string

// NewLabels returns the canonical form of ls (sorted, deduplicated). ls is not modified.
func NewLabels(ls ...string) Labels {
	out := slices.Clone(ls)
	slices.Sort(out)
	return Labels(slices.Compact(out))
}

// String joins the labels with commas; it is the canonical key of the set.
func (l Labels) String() string { return strings.Join(l, ",") }

// Short renders the labels without their source prefix, for humans.
func (l Labels) Short() string {
	parts := make([]string, len(l))
	for i, s := range l {
		_, kv := SplitSource(s)
		parts[i] = kv
	}
	return strings.Join(parts, ",")
}

// Get returns the value of the label with the given key (without source prefix).
func (l Labels) Get(key string) (string, bool) {
	for _, s := range l {
		_, kv := SplitSource(s)
		k, v, _ := strings.Cut(kv, "=")
		if k == key {
			return v, true
		}
	}
	return "", false
}

// SplitSource splits "k8s:app=web" into ("k8s", "app=web"). A label without a source gets "".
func SplitSource(label string) (source, keyValue string) {
	// The key itself may contain ':' only after '=' (values may); the source is before the first ':'
	// that comes before any '='.
	eq := strings.IndexByte(label, '=')
	colon := strings.IndexByte(label, ':')
	if colon < 0 || (eq >= 0 && colon > eq) {
		return "", label
	}
	return label[:colon], label[colon+1:]
}

// Cilium's identity label keys that carry namespace and cluster facts rather than pod labels.
const (
	LabelNamespace = "io.kubernetes.pod.namespace"
	labelNSLabels  = "io.cilium.k8s.namespace.labels."
	// LabelCluster names the ClusterMesh cluster of an endpoint; Cilium gives it to every
	// identity. It is kept in Labels (issue 16): the same pod labels in two clusters of a mesh
	// are two workloads, and a selector for a peer in another cluster must name that cluster.
	LabelCluster = "io.cilium.k8s.policy.cluster"
)

// Cluster returns the cluster the labels name, "" when they name none (recordings made
// without the label, pods resolved from the local cluster).
func (l Labels) Cluster() string {
	v, _ := l.Get(LabelCluster)
	return v
}

// WithoutCluster returns the labels without the cluster label; l is not modified.
func (l Labels) WithoutCluster() Labels {
	out := make(Labels, 0, len(l))
	for _, s := range l {
		if _, kv := SplitSource(s); !strings.HasPrefix(kv, LabelCluster+"=") {
			out = append(out, s)
		}
	}
	return out
}

// DefaultExcludedLabels are the label keys (regular expressions over the key, without the
// source prefix) that never identify a workload: they change on every rollout, name single
// pods, or carry versions. It is Cilium's default identity label filter plus the version
// labels that Cilium keeps but that split a workload on every upgrade.
var DefaultExcludedLabels = []string{
	`^pod-template-hash$`,
	`^controller-revision-hash$`,
	`^pod-template-generation$`,
	`^statefulset\.kubernetes\.io/pod-name$`,
	`^apps\.kubernetes\.io/pod-index$`,
	`^batch\.kubernetes\.io/`,
	`^controller-uid$`,
	`^job-name$`,
	`^io\.kubernetes\.pod\.name$`,
	`^io\.kubernetes\.pod\.uid$`,
	`^kubernetes\.io/`,
	`^k8s\.io/`,
	`^topology\.kubernetes\.io/`,
	`^helm\.sh/chart$`,
	`^app\.kubernetes\.io/version$`,
	`^io\.cilium\.k8s\.namespace\.labels\.`,
	`^io\.kubernetes\.pod\.namespace$`,
	`^annotation\.`,
}

// LabelFilter reduces identity labels to the stable set that identifies a workload.
// Include patterns win over exclude patterns, as in Cilium's label prefix configuration.
type LabelFilter struct {
	exclude []*regexp.Regexp
	include []*regexp.Regexp
}

// NewLabelFilter compiles the default exclusions plus the user's extra exclude and include
// regular expressions (matched against the label key without its source prefix).
func NewLabelFilter(exclude, include []string) (*LabelFilter, error) {
	f := &LabelFilter{}
	for _, p := range append(slices.Clone(DefaultExcludedLabels), exclude...) {
		re, err := regexp.Compile(p)
		if err != nil {
			return nil, fmt.Errorf("label exclude pattern %q: %w", p, err)
		}
		f.exclude = append(f.exclude, re)
	}
	for _, p := range include {
		re, err := regexp.Compile(p)
		if err != nil {
			return nil, fmt.Errorf("label include pattern %q: %w", p, err)
		}
		f.include = append(f.include, re)
	}
	return f, nil
}

// Keep reports whether a label key (without source) belongs to the stable set.
func (f *LabelFilter) Keep(key string) bool {
	for _, re := range f.include {
		if re.MatchString(key) {
			return true
		}
	}
	for _, re := range f.exclude {
		if re.MatchString(key) {
			return false
		}
	}
	return true
}

// Filter returns the stable, canonical subset of Hubble identity labels, and the namespace
// if the labels carry it. Reserved labels ("reserved:host") are dropped; the caller maps them
// to entities.
func (f *LabelFilter) Filter(raw []string) (Labels, string) {
	out := make([]string, 0, len(raw))
	ns := ""
	for _, s := range raw {
		src, kv := SplitSource(s)
		if src == "reserved" || src == "cidr" || src == "fqdn" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		if k == LabelNamespace {
			ns = v
		}
		if !f.Keep(k) {
			continue
		}
		out = append(out, s)
	}
	slices.Sort(out)
	return Labels(slices.Compact(out)), ns
}
