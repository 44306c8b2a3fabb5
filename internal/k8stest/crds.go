package k8stest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"
)

// ciliumModule provides the CRDs; its version is the one in go.mod.
const ciliumModule = "github.com/cilium/cilium"

// CiliumCRDFiles are the CRDs installed by Start, relative to the cilium
// module root. The same files are embedded in Cilium's
// pkg/k8s/apis/cilium.io/client package, which is not imported because it
// drags in Cilium's whole typed clientset.
var CiliumCRDFiles = []string{
	"pkg/k8s/apis/cilium.io/client/crds/v2/ciliumnetworkpolicies.yaml",
	"pkg/k8s/apis/cilium.io/client/crds/v2/ciliumclusterwidenetworkpolicies.yaml",
}

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// installCiliumCRDs applies Cilium's policy CRDs and waits until they are
// Established, so the dynamic client can use them right away.
func installCiliumCRDs(ctx context.Context, cfg *rest.Config) error {
	dir, err := moduleDir(ctx, ciliumModule)
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("dynamic client: %w", err)
	}
	crds := dyn.Resource(crdGVR)
	var names []string
	for _, f := range CiliumCRDFiles {
		path := filepath.Join(dir, f)
		y, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("read CRD: %w", err)
		}
		var obj unstructured.Unstructured
		if err := yaml.Unmarshal(y, &obj.Object); err != nil {
			return fmt.Errorf("decode CRD %s: %w", path, err)
		}
		body, err := json.Marshal(obj.Object)
		if err != nil {
			return fmt.Errorf("encode CRD %s: %w", path, err)
		}
		force := true
		if _, err := crds.Patch(ctx, obj.GetName(), types.ApplyPatchType, body, metav1.PatchOptions{FieldManager: "k8stest", Force: &force}); err != nil {
			return fmt.Errorf("apply CRD %s: %w", obj.GetName(), err)
		}
		names = append(names, obj.GetName())
	}
	for _, name := range names {
		err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			crd, err := crds.Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
			for _, c := range conds {
				m, _ := c.(map[string]any)
				if m["type"] == "Established" && m["status"] == "True" {
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil {
			return fmt.Errorf("wait for CRD %s to be established: %w", name, err)
		}
	}
	return nil
}
