package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	ciliumv2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	appsv1client "k8s.io/client-go/kubernetes/typed/apps/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"

	"github.com/recommender/recommender/pkg/flows"
)

// Reader reads context from the cluster: the Cilium policies already there, for shadow
// evaluation, and the pods with their owners, to resolve pods that flows name only by
// namespace and pod name, and the local cluster's name from Cilium's configuration. It never
// writes; deploy/rbac.yaml grants it list on CNPs, CCNPs, pods and replicasets,
// deploy/rbac-cilium-config.yaml get on Cilium's ConfigMap, and deploy/namespaced the
// same lists within namespaces (Scoped).
type Reader struct {
	core corev1client.CoreV1Interface
	apps appsv1client.AppsV1Interface
	dyn  dynamic.Interface
	// namespaces, when set, are the only ones read (Scoped).
	namespaces []string
}

// NewReader returns a Reader using the given clients.
func NewReader(core corev1client.CoreV1Interface, apps appsv1client.AppsV1Interface, dyn dynamic.Interface) *Reader {
	return &Reader{core: core, apps: apps, dyn: dyn}
}

// Scoped returns a Reader that reads in the given namespaces only, with the namespaced
// rights of deploy/namespaced (a team's own namespaces, issue 18): their pods, ReplicaSets and
// CNPs, and no CCNPs, which are cluster-scoped and need a ClusterRole to list. Pods of other
// namespaces are not resolved, and shadow evaluation does not see the cluster's CCNPs.
func (r *Reader) Scoped(namespaces []string) *Reader {
	out := *r
	out.namespaces = slices.Clone(namespaces)
	return &out
}

// scopes is what each list call runs over: the scoped namespaces, or all at once.
func (r *Reader) scopes() []string {
	if len(r.namespaces) > 0 {
		return r.namespaces
	}
	return []string{metav1.NamespaceAll}
}

// Workload is what a pod belongs to, named as users know it.
type Workload struct {
	Namespace string
	// Kind is Deployment, StatefulSet, DaemonSet, ReplicaSet (no owning
	// Deployment), Job, another controller kind, or Pod for a bare pod.
	Kind string
	Name string
}

func (w Workload) String() string { return w.Namespace + "/" + strings.ToLower(w.Kind) + "/" + w.Name }

// PodWorkload ties a pod to its workload.
type PodWorkload struct {
	Namespace string
	Pod       string
	Labels    map[string]string
	// ServiceAccount is spec.serviceAccountName: Cilium puts it in the pod's identity.
	ServiceAccount string
	Workload       Workload
}

// Policies are the Cilium policies already in the cluster.
type Policies struct {
	CNPs  []*ciliumv2.CiliumNetworkPolicy
	CCNPs []*ciliumv2.CiliumClusterwideNetworkPolicy
}

// PodWorkloads lists all pods with the workload each belongs to, sorted by
// namespace and pod name. A pod owned by a ReplicaSet is named after the
// ReplicaSet's Deployment, so names survive rollouts.
func (r *Reader) PodWorkloads(ctx context.Context) ([]PodWorkload, error) {
	rsOwners := map[string]metav1.OwnerReference{} // namespace/name -> controller
	for _, ns := range r.scopes() {
		opts := metav1.ListOptions{Limit: listPage}
		for {
			list, err := r.apps.ReplicaSets(ns).List(ctx, opts)
			if err != nil {
				return nil, fmt.Errorf("list replicasets%s: %w", inNamespace(ns), err)
			}
			for _, rs := range list.Items {
				if ref := metav1.GetControllerOf(&rs); ref != nil {
					rsOwners[rs.Namespace+"/"+rs.Name] = *ref
				}
			}
			if opts.Continue = list.Continue; opts.Continue == "" {
				break
			}
		}
	}

	var out []PodWorkload
	for _, ns := range r.scopes() {
		opts := metav1.ListOptions{Limit: listPage}
		for {
			list, err := r.core.Pods(ns).List(ctx, opts)
			if err != nil {
				return nil, fmt.Errorf("list pods%s: %w", inNamespace(ns), err)
			}
			for _, p := range list.Items {
				out = append(out, PodWorkload{
					Namespace:      p.Namespace,
					Pod:            p.Name,
					Labels:         p.Labels,
					ServiceAccount: p.Spec.ServiceAccountName,
					Workload:       workloadOf(p.Namespace, p.Name, metav1.GetControllerOf(&p), rsOwners),
				})
			}
			if opts.Continue = list.Continue; opts.Continue == "" {
				break
			}
		}
	}
	slices.SortFunc(out, func(a, b PodWorkload) int {
		return strings.Compare(a.Namespace+"/"+a.Pod, b.Namespace+"/"+b.Pod)
	})
	return out, nil
}

// Pods returns the cluster's pods as the flow source resolves them: the labels and owner of
// pods that flows name only by namespace and pod name (a field-masked Hubble export, a pod
// the L7 proxy reported as world).
func (r *Reader) Pods(ctx context.Context) ([]flows.Pod, error) {
	pws, err := r.PodWorkloads(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]flows.Pod, 0, len(pws))
	for _, pw := range pws {
		out = append(out, flows.Pod{Namespace: pw.Namespace, Name: pw.Pod, Labels: pw.Labels,
			ServiceAccount: pw.ServiceAccount, Workload: pw.Workload.Kind + "/" + pw.Workload.Name})
	}
	return out, nil
}

// workloadOf names a pod's workload from its controller reference, following
// ReplicaSets to their Deployment through rsOwners (namespace/name ->
// controller reference).
func workloadOf(namespace, pod string, ctrl *metav1.OwnerReference, rsOwners map[string]metav1.OwnerReference) Workload {
	if ctrl == nil {
		return Workload{Namespace: namespace, Kind: "Pod", Name: pod}
	}
	if ctrl.Kind == "ReplicaSet" && apiGroup(ctrl.APIVersion) == "apps" {
		if up, ok := rsOwners[namespace+"/"+ctrl.Name]; ok && up.Kind == "Deployment" && apiGroup(up.APIVersion) == "apps" {
			return Workload{Namespace: namespace, Kind: up.Kind, Name: up.Name}
		}
	}
	return Workload{Namespace: namespace, Kind: ctrl.Kind, Name: ctrl.Name}
}

func apiGroup(apiVersion string) string {
	gv, err := schema.ParseGroupVersion(apiVersion)
	if err != nil {
		return ""
	}
	return gv.Group
}

// Policies lists the CNPs and CCNPs in the cluster, ours included, sorted by
// namespace and name, so shadow evaluation can account for what Cilium
// already enforces. A Scoped reader lists the CNPs of its namespaces and no
// CCNPs.
func (r *Reader) Policies(ctx context.Context) (Policies, error) {
	var p Policies
	for _, ns := range r.scopes() {
		err := listDecoded(ctx, r.dyn.Resource(CNPResource).Namespace(ns), CNPResource.Resource+inNamespace(ns), func(u *unstructured.Unstructured) error {
			var cnp ciliumv2.CiliumNetworkPolicy
			if err := decode(u, &cnp); err != nil {
				return err
			}
			p.CNPs = append(p.CNPs, &cnp)
			return nil
		})
		if err != nil {
			return Policies{}, err
		}
	}
	if len(r.namespaces) > 0 {
		slices.SortFunc(p.CNPs, func(a, b *ciliumv2.CiliumNetworkPolicy) int {
			return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
		})
		return p, nil
	}
	err := listDecoded(ctx, r.dyn.Resource(CCNPResource), CCNPResource.Resource, func(u *unstructured.Unstructured) error {
		var ccnp ciliumv2.CiliumClusterwideNetworkPolicy
		if err := decode(u, &ccnp); err != nil {
			return err
		}
		p.CCNPs = append(p.CCNPs, &ccnp)
		return nil
	})
	if err != nil {
		return Policies{}, err
	}
	slices.SortFunc(p.CNPs, func(a, b *ciliumv2.CiliumNetworkPolicy) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	slices.SortFunc(p.CCNPs, func(a, b *ciliumv2.CiliumClusterwideNetworkPolicy) int {
		return strings.Compare(a.Name, b.Name)
	})
	return p, nil
}

// inNamespace is " in <ns>" for messages about a namespaced list, "" for all namespaces.
func inNamespace(ns string) string {
	if ns == metav1.NamespaceAll {
		return ""
	}
	return " in " + ns
}

// listDecoded pages through a list of rc; what names it in errors.
func listDecoded(ctx context.Context, rc dynamic.ResourceInterface, what string, add func(*unstructured.Unstructured) error) error {
	opts := metav1.ListOptions{Limit: listPage}
	for {
		list, err := rc.List(ctx, opts)
		if err != nil {
			return fmt.Errorf("list %s: %w", what, err)
		}
		for i := range list.Items {
			if err := add(&list.Items[i]); err != nil {
				return err
			}
		}
		if opts.Continue = list.GetContinue(); opts.Continue == "" {
			return nil
		}
	}
}

// decode converts through JSON so Cilium's own unmarshalers (selectors,
// ports) run, exactly as with the typed clientset.
func decode(u *unstructured.Unstructured, into any) error {
	raw, err := u.MarshalJSON()
	if err != nil {
		return fmt.Errorf("encode %s %s: %w", u.GetKind(), u.GetName(), err)
	}
	if err := json.Unmarshal(raw, into); err != nil {
		return fmt.Errorf("decode %s %s: %w", u.GetKind(), u.GetName(), err)
	}
	return nil
}

// Cilium's agent configuration as its Helm chart writes it (install/kubernetes/cilium,
// templates/cilium-configmap.yaml): ConfigMap cilium-config in the namespace Cilium runs in
// (the chart's namespaceOverride, else the release namespace; kube-system in Cilium's install
// guides), key cluster-name from the value cluster.name.
const (
	// CiliumConfigMap is the name of Cilium's agent configuration ConfigMap.
	CiliumConfigMap = "cilium-config"
	// ciliumClusterNameKey is the agent option cluster-name (pkg/clustermesh/types OptClusterName).
	ciliumClusterNameKey = "cluster-name"
	// ciliumDefaultClusterName is what an agent without the option uses (pkg/defaults
	// ClusterName) and the chart's default cluster.name.
	ciliumDefaultClusterName = "default"
)

// CiliumClusterName returns the cluster name Cilium's agents use, read from the cilium-config
// ConfigMap in namespace: the name in every identity's io.cilium.k8s.policy.cluster label. A
// ConfigMap without the key means the agent's default, "default". The request has the
// client's timeout, as every read of the Reader. Errors wrap the API's, so
// apierrors.IsNotFound (no such ConfigMap: not installed by the chart, another namespace) and
// apierrors.IsForbidden (no Role grants get on it) tell those apart from a failure.
func (r *Reader) CiliumClusterName(ctx context.Context, namespace string) (string, error) {
	cm, err := r.core.ConfigMaps(namespace).Get(ctx, CiliumConfigMap, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("read configmap %s/%s: %w", namespace, CiliumConfigMap, err)
	}
	name, ok := cm.Data[ciliumClusterNameKey]
	if !ok {
		return ciliumDefaultClusterName, nil
	}
	return name, nil
}
