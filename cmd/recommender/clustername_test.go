package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"

	"github.com/recommender/recommender/internal/flowgen"
)

// Ensure the local cluster name follows Cilium's configuration when it can be read: taken when
// --cluster-name is unset, an error naming both when they differ, and, without the ConfigMap
// or the right to read it, the flag (or the flows) with one log line saying why.
func TestLocalClusterName(t *testing.T) {
	configmaps := schema.GroupResource{Resource: "configmaps"}
	// Wrapped as Reader.CiliumClusterName returns them.
	wrap := func(err error) error { return fmt.Errorf("read configmap kube-system/cilium-config: %w", err) }
	notFound := wrap(apierrors.NewNotFound(configmaps, "cilium-config"))
	forbidden := wrap(apierrors.NewForbidden(configmaps, "cilium-config", errors.New("no role")))
	unreachable := wrap(errors.New("dial tcp 10.0.0.1:443: connect: connection refused"))
	tests := []struct {
		name      string
		flag      string
		cilium    string
		ciliumErr error
		want      string
		wantErr   []string // substrings of the error; nil: no error
		wantLog   string   // the one line logged; "" logs nothing above Info
	}{
		{"unset takes cilium's", "", "east", nil, "east", nil, ""},
		{"same as cilium's", "east", "east", nil, "east", nil, ""},
		{"differs from cilium's", "west", "east", nil, "", []string{`--cluster-name "west"`, `cluster-name "east"`, "kube-system/cilium-config"}, ""},
		{"cilium's default", "", "default", nil, "default", nil, ""},
		{"no configmap, flag", "west", "", notFound, "west", nil, "cilium configuration not readable"},
		{"no configmap, from the flows", "", "", notFound, "", nil, "cilium configuration not readable"},
		{"forbidden", "east", "", forbidden, "east", nil, "cilium configuration not readable"},
		{"empty cluster-name", "east", "", nil, "east", nil, "cilium configuration names no cluster"},
		{"api unreachable", "east", "", unreachable, "", []string{"--cilium-namespace kube-system", "connection refused"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
			var asked string
			read := func(_ context.Context, ns string) (string, error) {
				asked = ns
				return tt.cilium, tt.ciliumErr
			}
			got, err := localClusterName(t.Context(), tt.flag, "kube-system", read, log)
			if asked != "kube-system" {
				t.Errorf("read cilium-config in %q, want kube-system", asked)
			}
			switch {
			case tt.wantErr == nil && err != nil:
				t.Fatalf("localClusterName(%q) error = %v, want none", tt.flag, err)
			case tt.wantErr != nil:
				if err == nil {
					t.Fatalf("localClusterName(%q) = %q, want an error", tt.flag, got)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not say %q", err, w)
					}
				}
				return
			}
			if got != tt.want {
				t.Errorf("localClusterName(%q) = %q, want %q", tt.flag, got, tt.want)
			}
			lines := strings.Count(logs.String(), "\n")
			switch {
			case tt.wantLog == "" && lines != 0:
				t.Errorf("logged %q, want nothing at warn", logs.String())
			case tt.wantLog != "" && (lines != 1 || !strings.Contains(logs.String(), tt.wantLog)):
				t.Errorf("logged %q, want one line saying %q", logs.String(), tt.wantLog)
			}
		})
	}
}

// Ensure run connected to a cluster takes the local cluster's name from Cilium's cilium-config:
// a mesh recording without --cluster-name gets east's proposals only (and is refused without
// the ConfigMap), and a --cluster-name naming another cluster stops the start with both
// names (real kube-apiserver).
func TestRunClusterNameFromCilium(t *testing.T) {
	kube.Require(t)
	kc, err := kubernetes.NewForConfig(kube.Config)
	if err != nil {
		t.Fatal(err)
	}
	ns := "cilium-run"
	if _, err := kc.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cilium-config", Namespace: ns},
		Data: map[string]string{"cluster-name": flowgen.MeshEast, "cluster-id": "1"}}
	if _, err := kc.CoreV1().ConfigMaps(ns).Create(t.Context(), cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	mesh := meshFile(t)
	run := func(extra ...string) (string, string, error) {
		dir := t.TempDir()
		out := filepath.Join(dir, "out")
		args := append([]string{"run", "--flows", mesh, "--once", "--db", filepath.Join(dir, "r.db"), "--metrics-addr", "",
			"--out", out, "--kubeconfig", kube.Kubeconfig, "--cilium-namespace", ns, "--log-level", "error"}, extra...)
		_, stderr, err := runCmd(t.Context(), args...)
		return out, stderr, err
	}

	out, stderr, err := run()
	if err != nil {
		t.Fatalf("run without --cluster-name: %v\n%s", err, stderr)
	}
	yamls, _ := filepath.Glob(filepath.Join(out, "*.yaml"))
	var names []string
	for _, y := range yamls {
		names = append(names, strings.TrimSuffix(filepath.Base(y), ".yaml"))
	}
	// east runs frontend, cart and coredns; redis and prober run in west only.
	if !slices.Contains(names, "shop-frontend") || slices.Contains(names, "shop-redis") || slices.Contains(names, "ops-prober") {
		t.Errorf("proposals %v, want east's (shop-frontend) and none of west's (shop-redis, ops-prober)", names)
	}

	// Without cilium-config (another namespace) the name comes from the flows, as without a
	// cluster: synthesis refuses the mesh (the daemon logs it) and proposes nothing.
	noConfig, stderr, err := run("--cilium-namespace", "default")
	if err != nil {
		t.Fatalf("run without cilium-config: %v\n%s", err, stderr)
	}
	if yamls, _ := filepath.Glob(filepath.Join(noConfig, "*.yaml")); len(yamls) != 0 {
		t.Errorf("run without cilium-config or --cluster-name on a mesh proposed %v, want nothing", yamls)
	}

	_, _, err = run("--cluster-name", flowgen.MeshWest)
	if err == nil || !strings.Contains(err.Error(), `--cluster-name "west"`) || !strings.Contains(err.Error(), `cluster-name "east"`) {
		t.Errorf("run --cluster-name west against Cilium's east = %v, want an error naming both", err)
	}
}
