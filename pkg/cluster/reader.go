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
)

// Reader reads the Cilium policies already in the cluster, for shadow evaluation. It never
// writes, and reads nothing else: deploy/rbac.yaml grants it list on CNPs and CCNPs only.
type Reader struct {
	dyn dynamic.Interface
}

// NewReader returns a Reader using the given client.
func NewReader(dyn dynamic.Interface) *Reader {
	return &Reader{dyn: dyn}
}

// Policies are the Cilium policies already in the cluster.
type Policies struct {
	CNPs  []*ciliumv2.CiliumNetworkPolicy
	CCNPs []*ciliumv2.CiliumClusterwideNetworkPolicy
}

// Policies lists the CNPs and CCNPs in the cluster, ours included, sorted by
// namespace and name, so shadow evaluation can account for what Cilium
// already enforces.
func (r *Reader) Policies(ctx context.Context) (Policies, error) {
	var p Policies
	err := listDecoded(ctx, r.dyn, CNPResource, func(u *unstructured.Unstructured) error {
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
	err = listDecoded(ctx, r.dyn, CCNPResource, func(u *unstructured.Unstructured) error {
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

func listDecoded(ctx context.Context, dyn dynamic.Interface, gvr schema.GroupVersionResource, add func(*unstructured.Unstructured) error) error {
	opts := metav1.ListOptions{Limit: listPage}
	for {
		list, err := dyn.Resource(gvr).List(ctx, opts)
		if err != nil {
			return fmt.Errorf("list %s: %w", gvr.Resource, err)
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
