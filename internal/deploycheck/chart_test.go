package deploycheck

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/recommender/recommender/internal/helmcli"
)

var update = flag.Bool("update", false, "update .golden files")

const chartDir = "../../charts/recommender"

// helm runs the helm CLI (internal/helmcli/build.sh) and returns its stdout, or its stderr as
// the error.
func helm(t *testing.T, args ...string) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, helmcli.Path(t), args...)
	// No user config, cache or repositories leak in, and none is written outside the test.
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HELM_CONFIG_HOME="+home, "HELM_CACHE_HOME="+home, "HELM_DATA_HOME="+home)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("helm %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.Bytes(), nil
}

// chartCase is one set of values the chart is rendered with: testdata/chart/<name>.yaml
// (none for "default"), rendered as release in namespace; others are further namespaces
// it puts objects in (namespaces: [...]).
type chartCase struct {
	name, release, namespace string
	others                   []string
}

var chartCases = []chartCase{
	{"default", "recommender", "kube-system", nil},
	{"gitops", "recommender", "kube-system", nil},
	{"minimal", "policy", "recommender-system", nil},
	{"custom-network", "recommender", "cilium", nil},
	{"namespaced", "recommender", "team-a", nil},
	{"namespaces", "recommender", "team-a", []string{"team-a-staging"}},
	{"cnp", "recommender", "kube-system", nil},
}

// chartCaseNamed returns the chart case of that name.
func chartCaseNamed(t *testing.T, name string) chartCase {
	t.Helper()
	for _, c := range chartCases {
		if c.name == name {
			return c
		}
	}
	t.Fatalf("no chart case %s", name)
	return chartCase{}
}

func (c chartCase) render(t *testing.T) []byte {
	t.Helper()
	args := []string{"template", c.release, chartDir, "--namespace", c.namespace}
	if c.name != "default" {
		args = append(args, "--values", filepath.Join("testdata/chart", c.name+".yaml"))
	}
	out, err := helm(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Ensure the chart passes helm lint (strict: warnings fail) with every tested value set.
func TestChartLint(t *testing.T) {
	for _, c := range chartCases {
		t.Run(c.name, func(t *testing.T) {
			args := []string{"lint", "--strict", chartDir, "--namespace", c.namespace}
			if c.name != "default" {
				args = append(args, "--values", filepath.Join("testdata/chart", c.name+".yaml"))
			}
			if _, err := helm(t, args...); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// Ensure helm template renders each value set exactly as reviewed in its golden file
// (testdata/chart/<name>.golden; -update rewrites them), and renders it the same twice.
func TestChartTemplateGolden(t *testing.T) {
	for _, c := range chartCases {
		t.Run(c.name, func(t *testing.T) {
			got := c.render(t)
			if again := c.render(t); !bytes.Equal(got, again) {
				t.Fatal("two renders of the same values differ")
			}
			golden := filepath.Join("testdata/chart", c.name+".golden")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("helm template with %s differs from %s (run with -update and review the diff):\n%s", c.name, golden, firstDiff(got, want))
			}
		})
	}
}

// firstDiff shows the first differing line of two renders.
func firstDiff(got, want []byte) string {
	g, w := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
	for i := range max(len(g), len(w)) {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl {
			return fmt.Sprintf("line %d:\n got: %q\nwant: %q", i+1, gl, wl)
		}
	}
	return "(same lines)"
}

// Ensure values.schema.json rejects invalid values before anything renders, naming the value
// and what it must be.
func TestChartRejectsInvalidValues(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  []string
		want string
	}{
		{"no replicas", []string{"replicas=0"}, "at '/replicas': minimum: got 0, want 1"},
		{"replicas without election", []string{"replicas=2", "leaderElection.enabled=false"}, "at '/leaderElection/enabled': value must be true"},
		{"unknown apply mode", []string{"apply=audit"}, "at '/apply': value must be one of 'off', 'enforce'"},
		{"relay without port", []string{"hubble.relay.address=hubble-relay"}, "at '/hubble/relay/address': 'hubble-relay' does not match pattern"},
		{"tls without secret", []string{"hubble.relay.tls.secretName="}, "at '/hubble/relay/tls/secretName': minLength: got 0, want 1"},
		{"window in days", []string{"window=7d"}, "at '/window': '7d' does not match pattern"},
		{"gitops without url", []string{"gitops.enabled=true", "gitops.gitOnly=true"}, "at '/gitops/url': '' does not match pattern"},
		{"pull requests without repo", []string{"gitops.enabled=true", "gitops.url=https://github.com/a/b.git", "gitops.githubTokenSecret.name=gh"}, "at '/gitops/githubRepo': '' does not match pattern"},
		{"pull requests without token", []string{"gitops.enabled=true", "gitops.url=https://github.com/a/b.git", "gitops.githubRepo=a/b"}, "at '/gitops/githubTokenSecret/name': minLength: got 0, want 1"},
		{"bad memory", []string{"resources.limits.memory=1 GB"}, "at '/resources/limits/memory': '1 GB' does not match pattern"},
		{"misspelt toggle", []string{"serviceMonitor.enable=false"}, "at '/serviceMonitor': additional properties 'enable' not allowed"},
		{"unknown value", []string{"replica=1"}, "at '': additional properties 'replica' not allowed"},
		{"numeric tag", []string{"image.tag=1"}, "at '/image/tag': got number, want string"},
		{"flag without dashes", []string{"extraArgs[0]=learn=false"}, "at '/extraArgs/0': 'learn=false' does not match pattern"},
		{"port out of range", []string{"metricsPort=70000"}, "at '/metricsPort': maximum: got 70,000, want 65,535"},
		{"cilium namespace not a name", []string{"cilium.namespace=Kube_System"}, "at '/cilium/namespace': 'Kube_System' does not match pattern"},
		{"unknown policy kind", []string{"policyKind=NetworkPolicy"}, "at '/policyKind': value must be one of 'CiliumClusterwideNetworkPolicy', 'CiliumNetworkPolicy'"},
		{"namespaces of CCNPs", []string{"namespaces[0]=shop"}, "at '/policyKind': value must be 'CiliumNetworkPolicy'"},
		{"bad namespace", []string{"policyKind=CiliumNetworkPolicy", "namespaces[0]=Shop"}, "at '/namespaces/0': 'Shop' does not match pattern"},
		{"namespaces with gitops", []string{"policyKind=CiliumNetworkPolicy", "namespaces[0]=shop", "gitops.enabled=true", "gitops.url=https://github.com/a/b.git", "gitops.gitOnly=true"}, "at '/gitops/enabled': value must be false"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"template", "recommender", chartDir}
			for _, s := range tc.set {
				args = append(args, "--set", s)
			}
			out, err := helm(t, args...)
			if err == nil {
				t.Fatalf("helm template --set %v succeeded, want a schema error; rendered:\n%.500s", tc.set, out)
			}
			if !strings.Contains(err.Error(), "values don't meet the specifications of the schema") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("helm template --set %v: %v\nwant it to say %q", tc.set, err, tc.want)
			}
		})
	}
}

// helmOnlyLabels are the labels the chart adds that a kustomize base has no use for.
var helmOnlyLabels = []string{"helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/instance", "app.kubernetes.io/version"}

// normalize drops Helm's bookkeeping labels from every labels, matchLabels and (Service)
// selector map.
func normalize(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if m, ok := e.(map[string]any); ok && (k == "labels" || k == "matchLabels" || k == "selector") {
				for _, l := range helmOnlyLabels {
					delete(m, l)
				}
			}
			normalize(e)
		}
	case []any:
		for _, e := range x {
			normalize(e)
		}
	}
	return v
}

func objectKey(o map[string]any) string {
	return fmt.Sprintf("%v %v/%v", o["kind"], get(o, "metadata", "namespace"), get(o, "metadata", "name"))
}

// Ensure deploy/ and the chart never drift: the kustomize base renders exactly the objects
// the chart renders with its default values as release "recommender" in kube-system, and a
// kustomization using deploy/namespaced in team-a (testdata/namespaced) exactly what the chart
// renders with namespaces: [team-a] in team-a, apart from Helm's own labels.
func TestChartMatchesKustomize(t *testing.T) {
	for _, tc := range []struct{ kustomization, chart string }{
		{deployDir, "default"},
		{"testdata/namespaced", "namespaced"},
	} {
		t.Run(tc.chart, func(t *testing.T) {
			// The component names the daemon's namespace through the pod's environment; the chart
			// lists it.
			rendered := bytes.ReplaceAll(kubectl(t, "kustomize", tc.kustomization), []byte("--namespace=$(POD_NAMESPACE)"), []byte("--namespace=team-a"))
			charted := docs(t, chartCaseNamed(t, tc.chart).render(t))
			if tc.chart == "namespaced" {
				// The component drops the base's namespaceSelector (kube-system): a ServiceMonitor
				// without one scrapes its own namespace, which is what the chart names.
				for _, o := range charted {
					if o["kind"] == "ServiceMonitor" {
						delete(o["spec"].(map[string]any), "namespaceSelector")
					}
				}
			}
			compareRenders(t, docs(t, rendered), charted)
		})
	}
}

// compareRenders reports every object that is not the same in both renders.
func compareRenders(t *testing.T, kustomized, charted []map[string]any) {
	t.Helper()
	want := map[string]map[string]any{}
	for _, o := range kustomized {
		want[objectKey(o)] = normalize(o).(map[string]any)
	}
	got := map[string]map[string]any{}
	for _, o := range charted {
		got[objectKey(o)] = normalize(o).(map[string]any)
	}
	for k, w := range want {
		g, ok := got[k]
		if !ok {
			t.Errorf("deploy/ renders %s; the chart does not", k)
			continue
		}
		if !reflect.DeepEqual(g, w) {
			gy, _ := yaml.Marshal(g)
			wy, _ := yaml.Marshal(w)
			t.Errorf("%s differs between the chart and deploy/ (change both):\n%s", k, firstDiff(gy, wy))
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("the chart renders %s; deploy/ does not", k)
		}
	}
}

// Ensure the chart's copies of the promtool-tested alert rules and of the dashboard are the
// files in deploy/ (a chart cannot read files outside its directory).
func TestChartFilesMatchDeploy(t *testing.T) {
	for chart, deploy := range map[string]string{
		"files/rules.yaml":                 "prometheus/rules.yaml",
		"files/recommender-dashboard.json": "grafana/recommender-dashboard.json",
	} {
		c, err := os.ReadFile(filepath.Join(chartDir, chart))
		if err != nil {
			t.Fatal(err)
		}
		d, err := os.ReadFile(filepath.Join(deployDir, deploy))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(c, d) {
			t.Errorf("charts/recommender/%s differs from deploy/%s: copy deploy/%s over", chart, deploy, deploy)
		}
	}
}

// Ensure the API server accepts every object the chart renders, for every tested value set
// (kubectl apply --dry-run=server, schema validation on, with Cilium's and
// prometheus-operator's CRDs installed).
func TestChartServerDryRun(t *testing.T) {
	env.Require(t)
	installMonitoringCRDs(t)
	kc := "--kubeconfig=" + env.Kubeconfig
	for _, c := range chartCases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			ns := filepath.Join(dir, "namespace.yaml")
			var nsDocs []string
			for _, n := range append([]string{c.namespace}, c.others...) {
				nsDocs = append(nsDocs, "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: "+n+"\n")
			}
			if err := os.WriteFile(ns, []byte(strings.Join(nsDocs, "---\n")), 0o644); err != nil {
				t.Fatal(err)
			}
			kubectl(t, kc, "apply", "-f", ns)
			rendered := filepath.Join(dir, "rendered.yaml")
			out := c.render(t)
			if err := os.WriteFile(rendered, out, 0o644); err != nil {
				t.Fatal(err)
			}
			got := string(kubectl(t, kc, "apply", "--dry-run=server", "-f", rendered))
			objs := docs(t, out)
			for _, o := range objs {
				kind := strings.ToLower(o["kind"].(string))
				if !strings.Contains(got, kind) || !strings.Contains(got, fmt.Sprintf("/%v", get(o, "metadata", "name"))) {
					t.Errorf("dry run did not accept %s:\n%s", objectKey(o), got)
				}
			}
			if n := strings.Count(got, "(server dry run)"); n != len(objs) {
				t.Errorf("dry run accepted %d objects, want %d:\n%s", n, len(objs), got)
			}
		})
	}
}
