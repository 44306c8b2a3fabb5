package flows

import (
	"slices"
	"testing"
)

func TestSplitSource(t *testing.T) {
	cases := []struct{ in, src, kv string }{
		{"k8s:app=web", "k8s", "app=web"},
		{"reserved:host", "reserved", "host"},
		{"k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=shop", "k8s", "io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=shop"},
		{"app=web", "", "app=web"},
		{"app=http://x", "", "app=http://x"}, // ':' only in the value
		{"cidr:10.0.0.0/8", "cidr", "10.0.0.0/8"},
		{"", "", ""},
	}
	for _, tc := range cases {
		src, kv := SplitSource(tc.in)
		if src != tc.src || kv != tc.kv {
			t.Errorf("SplitSource(%q) = %q, %q, want %q, %q", tc.in, src, kv, tc.src, tc.kv)
		}
	}
}

func TestLabelFilter(t *testing.T) {
	raw := []string{
		"k8s:app=web",
		"k8s:app.kubernetes.io/name=web",
		"k8s:app.kubernetes.io/version=v1.2.3",
		"k8s:helm.sh/chart=web-1.0.0",
		"k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=shop",
		"k8s:io.cilium.k8s.namespace.labels.team=payments",
		"k8s:io.cilium.k8s.policy.cluster=default",
		"k8s:io.cilium.k8s.policy.serviceaccount=web",
		"k8s:io.kubernetes.pod.namespace=shop",
		"k8s:pod-template-hash=7d9f8b6c4",
		"k8s:controller-revision-hash=web-6c9d8f7b5",
		"k8s:pod-template-generation=3",
		"k8s:statefulset.kubernetes.io/pod-name=web-0",
		"k8s:apps.kubernetes.io/pod-index=0",
		"k8s:batch.kubernetes.io/job-name=migrate",
		"k8s:batch.kubernetes.io/controller-uid=0c7f2a",
		"k8s:controller-uid=0c7f2a",
		"k8s:job-name=migrate",
		"k8s:io.kubernetes.pod.name=web-0",
		"k8s:topology.kubernetes.io/zone=eu-west-1a",
		"container:com.docker.image=web",
		"reserved:host",
		"cidr:10.0.0.0/8",
		"fqdn:api.github.com",
		"k8s:tier=frontend",
		"k8s:app=web", // duplicate
	}
	stable := Labels{
		"container:com.docker.image=web",
		"k8s:app.kubernetes.io/name=web",
		"k8s:app=web",
		"k8s:io.cilium.k8s.policy.cluster=default", // kept: the same labels in two clusters are two workloads
		"k8s:io.cilium.k8s.policy.serviceaccount=web",
		"k8s:tier=frontend",
	}
	cases := []struct {
		name             string
		exclude, include []string
		want             Labels
	}{
		{"defaults", nil, nil, stable},
		{"exclude tier", []string{`^tier$`}, nil, slices.DeleteFunc(slices.Clone(stable), func(s string) bool { return s == "k8s:tier=frontend" })},
		{"exclude matches the key, not the source", []string{`^k8s:`}, nil, stable},
		{"include wins over a default exclusion", nil, []string{`^app\.kubernetes\.io/version$`},
			NewLabels(append(slices.Clone(stable), "k8s:app.kubernetes.io/version=v1.2.3")...)},
		{"include wins over a user exclusion", []string{`^app`}, []string{`^app$`},
			Labels{"container:com.docker.image=web", "k8s:app=web", "k8s:io.cilium.k8s.policy.cluster=default", "k8s:io.cilium.k8s.policy.serviceaccount=web", "k8s:tier=frontend"}},
		{"include cannot bring back reserved labels", nil, []string{`.*`}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, err := NewLabelFilter(tc.exclude, tc.include)
			if err != nil {
				t.Fatal(err)
			}
			got, ns := f.Filter(raw)
			if ns != "shop" {
				t.Errorf("namespace = %q, want shop", ns)
			}
			if tc.name == "include cannot bring back reserved labels" {
				for _, l := range got {
					if src, _ := SplitSource(l); src == "reserved" || src == "cidr" || src == "fqdn" {
						t.Errorf("Filter kept %q", l)
					}
				}
				return
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("Filter() = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestNewLabelFilterBadPattern(t *testing.T) {
	if _, err := NewLabelFilter([]string{"("}, nil); err == nil {
		t.Error("NewLabelFilter with bad exclude: no error")
	}
	if _, err := NewLabelFilter(nil, []string{"[a-"}); err == nil {
		t.Error("NewLabelFilter with bad include: no error")
	}
}

func TestLabels(t *testing.T) {
	l := NewLabels("k8s:b=2", "k8s:a=1", "k8s:b=2")
	if want := (Labels{"k8s:a=1", "k8s:b=2"}); !slices.Equal(l, want) {
		t.Errorf("NewLabels = %v, want %v", l, want)
	}
	if got := l.String(); got != "k8s:a=1,k8s:b=2" {
		t.Errorf("String() = %q", got)
	}
	if got := l.Short(); got != "a=1,b=2" {
		t.Errorf("Short() = %q", got)
	}
	if v, ok := l.Get("b"); !ok || v != "2" {
		t.Errorf("Get(b) = %q, %v", v, ok)
	}
	if _, ok := l.Get("c"); ok {
		t.Error("Get(c) found a label")
	}
}

// Ensure the cluster a workload's labels name is found, and that removing it leaves the rest.
func TestLabelsCluster(t *testing.T) {
	l := NewLabels("k8s:app=web", "k8s:io.cilium.k8s.policy.cluster=west", "k8s:io.cilium.k8s.policy.serviceaccount=web")
	if got := l.Cluster(); got != "west" {
		t.Errorf("Cluster() = %q, want west", got)
	}
	if got, want := l.WithoutCluster(), (Labels{"k8s:app=web", "k8s:io.cilium.k8s.policy.serviceaccount=web"}); !slices.Equal(got, want) {
		t.Errorf("WithoutCluster() = %v, want %v", got, want)
	}
	if got := NewLabels("k8s:app=web").Cluster(); got != "" {
		t.Errorf("Cluster() without the label = %q, want empty", got)
	}
}
