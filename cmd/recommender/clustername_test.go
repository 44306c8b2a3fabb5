package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
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
