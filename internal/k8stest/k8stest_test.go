package k8stest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
)

// fakeTB records Skip and Fatal instead of ending the test.
type fakeTB struct {
	testing.TB
	skipped, failed string
}

func (f *fakeTB) Helper()              {}
func (f *fakeTB) Skip(args ...any)     { f.skipped = args[0].(string) }
func (f *fakeTB) Fatal(args ...any)    { f.failed = args[0].(string) }
func (f *fakeTB) Skipf(string, ...any) {}

// Ensure tests skip outside CI and fail in CI when no cluster runs.
func TestRequire(t *testing.T) {
	tests := []struct {
		name              string
		c                 *Cluster
		wantSkip, wantErr bool
	}{
		{"not enabled", &Cluster{skip: "set RECOMMENDER_K8S=1"}, true, false},
		{"missing binaries in CI", &Cluster{skip: "run build.sh", fail: true}, false, true},
		{"no TestMain", nil, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeTB{TB: t}
			tt.c.Require(f)
			if (f.skipped != "") != tt.wantSkip || (f.failed != "") != tt.wantErr {
				t.Errorf("Require() skipped=%q failed=%q, want skip=%v fail=%v", f.skipped, f.failed, tt.wantSkip, tt.wantErr)
			}
		})
	}
}

// Ensure Start serves Cilium's policy CRDs with a working kubeconfig, and
// Stop ends both servers and removes their state.
func TestStartStop(t *testing.T) {
	if !Enabled() {
		t.Skip("integration test: set " + EnvEnable + "=1 to start a real kube-apiserver")
	}
	if !binariesPresent() {
		if os.Getenv("CI") == "true" {
			t.Fatalf("etcd and kube-apiserver missing from %s; run internal/k8stest/build.sh", BinDir())
		}
		t.Skipf("etcd and kube-apiserver missing from %s; run internal/k8stest/build.sh", BinDir())
	}
	ctx, cancel := context.WithTimeout(t.Context(), startTimeout)
	defer cancel()
	c, err := Start(ctx)
	if err != nil {
		t.Fatalf("Start() = %v", err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			c.Stop()
		}
	})

	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range CiliumCRDFiles {
		name := strings.TrimSuffix(filepath.Base(f), ".yaml") + ".cilium.io"
		if _, err := dyn.Resource(crdGVR).Get(ctx, name, metav1.GetOptions{}); err != nil {
			t.Errorf("CRD %s: %v", name, err)
		}
	}
	kc, err := os.ReadFile(c.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{c.Config.Host, c.Config.BearerToken, c.Config.CAFile} {
		if !strings.Contains(string(kc), want) {
			t.Errorf("kubeconfig lacks %q", want)
		}
	}

	apiserver, etcd, dir := c.apiserver, c.etcd, c.dir
	if err := c.Stop(); err != nil {
		t.Errorf("Stop() = %v", err)
	}
	stopped = true
	// ProcessState is set once Wait has seen the process exit.
	if apiserver.ProcessState == nil || etcd.ProcessState == nil {
		t.Errorf("after Stop: kube-apiserver exited=%v etcd exited=%v, want both", apiserver.ProcessState != nil, etcd.ProcessState != nil)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("state dir %s after Stop: %v, want removed", dir, err)
	}
}
