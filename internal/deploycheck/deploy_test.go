package deploycheck

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/recommender/recommender/internal/k8stest"
)

const deployDir = "../../deploy"

var env *k8stest.Cluster

func TestMain(m *testing.M) { os.Exit(k8stest.Main(m, &env)) }

// kubectl runs kubectl, which the test machines have; CI must not pass by skipping.
func kubectl(t *testing.T, args ...string) []byte {
	t.Helper()
	if _, err := exec.LookPath("kubectl"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("kubectl not found")
		}
		t.Skip("kubectl not found")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "kubectl", args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out
}

// docs splits a rendered multi-document YAML stream into objects.
func docs(t *testing.T, b []byte) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, d := range regexp.MustCompile(`(?m)^---$`).Split(string(b), -1) {
		if strings.TrimSpace(d) == "" {
			continue
		}
		var m map[string]any
		if err := yaml.Unmarshal([]byte(d), &m); err != nil {
			t.Fatalf("decode rendered document: %v\n%s", err, d)
		}
		out = append(out, m)
	}
	return out
}

func get(m any, path ...string) any {
	for _, p := range path {
		mm, ok := m.(map[string]any)
		if !ok {
			return nil
		}
		m = mm[p]
	}
	return m
}

// Ensure the kustomize base renders every object the deployment needs, in kube-system, with
// the hardening the README promises.
func TestKustomizeRenders(t *testing.T) {
	objs := docs(t, kubectl(t, "kustomize", deployDir))
	kinds := map[string]map[string]any{}
	for _, o := range objs {
		kinds[o["kind"].(string)] = o
		if ns := get(o, "metadata", "namespace"); o["kind"] != "ClusterRole" && o["kind"] != "ClusterRoleBinding" && ns != "kube-system" {
			t.Errorf("%s/%v in namespace %v, want kube-system", o["kind"], get(o, "metadata", "name"), ns)
		}
	}
	for _, k := range []string{"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "StatefulSet", "Service",
		"ServiceMonitor", "PrometheusRule", "CiliumNetworkPolicy", "ConfigMap"} {
		if kinds[k] == nil {
			t.Errorf("rendered deploy/ has no %s", k)
		}
	}
	sts := kinds["StatefulSet"]
	pod := get(sts, "spec", "template", "spec")
	if got := get(pod, "securityContext", "runAsNonRoot"); got != true {
		t.Errorf("pod runAsNonRoot = %v, want true", got)
	}
	if got := get(pod, "securityContext", "seccompProfile", "type"); got != "RuntimeDefault" {
		t.Errorf("pod seccompProfile = %v, want RuntimeDefault", got)
	}
	c := get(pod, "containers").([]any)[0]
	for path, want := range map[string]any{
		"readOnlyRootFilesystem":   true,
		"allowPrivilegeEscalation": false,
	} {
		if got := get(c, "securityContext", path); got != want {
			t.Errorf("container securityContext.%s = %v, want %v", path, got, want)
		}
	}
	if got := get(c, "securityContext", "capabilities", "drop"); !reflect.DeepEqual(got, []any{"ALL"}) {
		t.Errorf("container drops capabilities %v, want [ALL]", got)
	}
	for _, probe := range []string{"livenessProbe", "readinessProbe"} {
		if get(c, probe) == nil {
			t.Errorf("container has no %s", probe)
		}
	}
	if get(c, "resources", "requests") == nil || get(c, "resources", "limits") == nil {
		t.Error("container has no resource requests and limits")
	}
}

// Ensure deploy/prometheusrule.yaml ships exactly the groups promtool checks and unit-tests
// in deploy/prometheus/rules.yaml.
func TestPrometheusRuleMatchesTestedRules(t *testing.T) {
	var rule struct {
		Spec struct {
			Groups any `json:"groups"`
		} `json:"spec"`
	}
	var tested struct {
		Groups any `json:"groups"`
	}
	read := func(path string, into any) {
		b, err := os.ReadFile(filepath.Join(deployDir, path))
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(b, into); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	read("prometheusrule.yaml", &rule)
	read("prometheus/rules.yaml", &tested)
	if tested.Groups == nil || !reflect.DeepEqual(rule.Spec.Groups, tested.Groups) {
		t.Error("deploy/prometheusrule.yaml spec.groups differ from deploy/prometheus/rules.yaml: copy the groups over")
	}
}

// metricRE finds recommender metric names in PromQL.
var metricRE = regexp.MustCompile(`recommender_[a-z_]+`)

// Ensure the dashboard and the alerts only query metrics the daemon documents (docs/metrics.md
// is generated from the registered collectors), so a renamed metric cannot leave them blank.
func TestDashboardAndAlertsUseExportedMetrics(t *testing.T) {
	doc, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	exported := map[string]bool{}
	for _, m := range regexp.MustCompile("`(recommender_[a-z_]+)`").FindAllStringSubmatch(string(doc), -1) {
		exported[m[1]] = true
	}
	dash, err := os.ReadFile(filepath.Join(deployDir, "grafana/recommender-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d map[string]any
	if err := json.Unmarshal(dash, &d); err != nil {
		t.Fatalf("dashboard is not JSON: %v", err)
	}
	rules, err := os.ReadFile(filepath.Join(deployDir, "prometheus/rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"dashboard": dash, "alert rules": rules} {
		for _, m := range metricRE.FindAllString(string(b), -1) {
			base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m, "_bucket"), "_sum"), "_count")
			if !exported[base] {
				t.Errorf("%s queries %s, which the daemon does not export", name, m)
			}
		}
	}
}

// prometheusOperator is the release whose CRD manifests the ServiceMonitor and PrometheusRule
// are validated against.
const prometheusOperator = "github.com/prometheus-operator/prometheus-operator@v0.93.0"

// installMonitoringCRDs installs prometheus-operator's ServiceMonitor and PrometheusRule CRDs
// (Cilium's come with the cluster) and waits until they are served. Applying them again is a
// no-op.
func installMonitoringCRDs(t *testing.T) {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), "go", "mod", "download", "-json", prometheusOperator).Output()
	if err != nil {
		t.Fatalf("download %s: %v", prometheusOperator, err)
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		t.Fatalf("download %s: no module directory (%v)", prometheusOperator, err)
	}
	kc := "--kubeconfig=" + env.Kubeconfig
	for _, crd := range []string{"monitoring.coreos.com_servicemonitors.yaml", "monitoring.coreos.com_prometheusrules.yaml"} {
		kubectl(t, kc, "apply", "--server-side", "-f", filepath.Join(mod.Dir, "example/prometheus-operator-crd", crd))
	}
	kubectl(t, kc, "wait", "--for=condition=Established", "--timeout=60s",
		"crd/servicemonitors.monitoring.coreos.com", "crd/prometheusrules.monitoring.coreos.com")
}

// Ensure the API server accepts every manifest of deploy/ with schema validation on
// (kubectl apply --dry-run=server), with the real CRDs installed.
func TestServerDryRun(t *testing.T) {
	env.Require(t)
	installMonitoringCRDs(t)
	kc := "--kubeconfig=" + env.Kubeconfig
	got := string(kubectl(t, kc, "apply", "--dry-run=server", "-k", deployDir))
	for _, want := range []string{"statefulset.apps/recommender", "ciliumnetworkpolicy.cilium.io/recommender",
		"prometheusrule.monitoring.coreos.com/recommender", "servicemonitor.monitoring.coreos.com/recommender",
		"clusterrole.rbac.authorization.k8s.io/recommender"} {
		if !strings.Contains(got, want) {
			t.Errorf("dry run output lacks %s:\n%s", want, got)
		}
	}
}

// Ensure a kustomization using deploy/namespaced (testdata/namespaced: namespace team-a) runs
// the daemon for its own namespace with no cluster-scoped object at all, writing CNPs, and that
// the API server accepts it (server-side dry run).
func TestNamespacedKustomization(t *testing.T) {
	const kustomization = "testdata/namespaced"
	objs := docs(t, kubectl(t, "kustomize", kustomization))
	roles := 0
	for _, o := range objs {
		kind, ns := o["kind"].(string), get(o, "metadata", "namespace")
		if ns != "team-a" {
			t.Errorf("%s %v is in namespace %v, want team-a (nothing cluster-scoped)", kind, get(o, "metadata", "name"), ns)
		}
		if kind == "Role" {
			roles++
		}
		if kind != "StatefulSet" {
			continue
		}
		args := fmt.Sprint(get(o, "spec", "template", "spec", "containers").([]any)[0].(map[string]any)["args"])
		for _, want := range []string{"--policy-kind=CiliumNetworkPolicy", "--namespace=$(POD_NAMESPACE)", "--leader-elect-namespace=$(POD_NAMESPACE)"} {
			if !strings.Contains(args, want) {
				t.Errorf("StatefulSet args %s lack %s", args, want)
			}
		}
	}
	if roles != 2 {
		t.Errorf("%d Roles, want 2 (policies, leader election)", roles)
	}

	env.Require(t)
	installMonitoringCRDs(t)
	kc := "--kubeconfig=" + env.Kubeconfig
	ns := filepath.Join(t.TempDir(), "namespace.yaml")
	if err := os.WriteFile(ns, []byte("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-a\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	kubectl(t, kc, "apply", "-f", ns)
	got := string(kubectl(t, kc, "apply", "--dry-run=server", "-k", kustomization))
	if n := strings.Count(got, "(server dry run)"); n != len(objs) {
		t.Errorf("dry run accepted %d objects, want %d:\n%s", n, len(objs), got)
	}
}
