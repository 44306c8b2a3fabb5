package flows

import (
	"maps"
	"slices"
	"sync/atomic"
)

// Pod is what a PodTable knows of one pod, as read from the cluster.
type Pod struct {
	Namespace string
	Name      string
	// Labels are the pod's Kubernetes labels (metadata.labels).
	Labels map[string]string
	// ServiceAccount is spec.serviceAccountName; Cilium adds it to the identity as
	// io.cilium.k8s.policy.serviceaccount, so flows that carry labels have it too.
	ServiceAccount string
	// Workload is the owner as users name it ("Deployment/web").
	Workload string
}

// PodTable is a PodResolver over a list of pods read beforehand (pkg/cluster.Reader
// PodWorkloads, by the command). It is immutable and safe for concurrent use.
type PodTable struct {
	pods map[string]podEntry // namespace/name
}

type podEntry struct {
	labels   []string
	workload string
}

// NewPodTable indexes pods. Labels get the source prefix Cilium gives them ("k8s:"), plus the
// namespace and service-account labels of a Cilium identity, so a pod resolved here has the
// same workload key as the same pod seen in a flow that carries its labels.
func NewPodTable(pods []Pod) *PodTable {
	t := &PodTable{pods: make(map[string]podEntry, len(pods))}
	for _, p := range pods {
		ls := make([]string, 0, len(p.Labels)+2)
		for _, k := range slices.Sorted(maps.Keys(p.Labels)) {
			ls = append(ls, "k8s:"+k+"="+p.Labels[k])
		}
		ls = append(ls, "k8s:"+LabelNamespace+"="+p.Namespace)
		if p.ServiceAccount != "" {
			ls = append(ls, "k8s:"+labelServiceAccount+"="+p.ServiceAccount)
		}
		t.pods[p.Namespace+"/"+p.Name] = podEntry{labels: ls, workload: p.Workload}
	}
	return t
}

// labelServiceAccount is the identity label Cilium derives from spec.serviceAccountName.
const labelServiceAccount = "io.cilium.k8s.policy.serviceaccount"

// PodLabels implements PodResolver.
func (t *PodTable) PodLabels(namespace, pod string) ([]string, string, bool) {
	e, ok := t.pods[namespace+"/"+pod]
	return e.labels, e.workload, ok
}

// LivePods is a PodResolver whose table is replaced while the source runs: the daemon reads
// the cluster's pods again on every sync, so pods created since resolve and deleted ones stop
// resolving. Until the first Store nothing resolves. It is safe for concurrent use.
type LivePods struct{ table atomic.Pointer[PodTable] }

// Store makes t the table PodLabels answers from.
func (l *LivePods) Store(t *PodTable) { l.table.Store(t) }

// PodLabels implements PodResolver.
func (l *LivePods) PodLabels(namespace, pod string) ([]string, string, bool) {
	t := l.table.Load()
	if t == nil {
		return nil, "", false
	}
	return t.PodLabels(namespace, pod)
}
