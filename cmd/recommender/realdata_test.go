package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	k8syaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/recommender/recommender/internal/realdata"
	"github.com/recommender/recommender/pkg/audit"
	"github.com/recommender/recommender/pkg/flows"
)

// realdataDir returns the directory sub of the real captures and policies (internal/realdata),
// or skips: a user's clone has none, and its files are never copied into the repository.
func realdataDir(t *testing.T, sub string) string {
	t.Helper()
	dir := realdata.Dir(sub)
	if dir == "" {
		t.Skipf("no real data %s (set %s)", sub, realdata.Env)
	}
	return dir
}

// Ensure every real capture parses in --strict mode, recommend writes policies for every
// capture with pod-to-pod or pod-to-world traffic, and check of those policies against the
// same capture finds no would-be-denied connection.
func TestRealCaptures(t *testing.T) {
	dir := realdataDir(t, "flows")
	files, err := filepath.Glob(filepath.Join(dir, "*.json*"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no captures in %s: %v", dir, err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			events, summary, err := runCmd(t.Context(), "flows", "--flows", f, "--strict", "-o", "json", "--log-level", "error")
			if err != nil {
				t.Fatalf("flows --strict: %v", err)
			}
			if !podTraffic(t, events) {
				t.Logf("no pod-to-pod or pod-to-world traffic (%s)", strings.TrimSpace(summary))
				return
			}
			out := t.TempDir()
			stdout, _, err := runCmd(t.Context(), "recommend", "--flows", f, "--out", out, "--log-level", "error")
			if err != nil {
				t.Fatalf("recommend: %v", err)
			}
			if strings.HasPrefix(stdout, "0 policies") {
				t.Fatalf("recommend wrote no policy for a capture with pod traffic:\n%s", stdout)
			}
			checkOut, checkErr, err := runCmd(t.Context(), "check", "--policies", out, "--flows", f, "--log-level", "error")
			if err != nil {
				t.Errorf("check of the recommended policies against their capture: %v\n%s%s", err, checkOut, checkErr)
			}
		})
	}
}

// podTraffic reports whether `flows -o json` output holds an event from a workload to a
// workload or to the world, in either direction.
func podTraffic(t *testing.T, events string) bool {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(events))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var ev flows.JSONEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("flows -o json line: %v", err)
		}
		if ev.Src == nil || ev.Dst == nil {
			continue
		}
		pod := func(p *flows.JSONPeer) bool { return p.Kind == "workload" }
		podOrWorld := func(p *flows.JSONPeer) bool { return p.Kind == "workload" || p.Kind == "world" }
		if pod(ev.Src) && podOrWorld(ev.Dst) || pod(ev.Dst) && podOrWorld(ev.Src) {
			return true
		}
	}
	return false
}

// Ensure every policy document under realdata/policies is loaded or reported on its own,
// naming its file and document index.
func TestRealPolicies(t *testing.T) {
	dir := realdataDir(t, "policies")
	err := filepath.WalkDir(dir, func(path string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() || !strings.HasSuffix(path, ".yaml") {
			return err
		}
		t.Run(strings.TrimPrefix(path, dir+"/"), func(t *testing.T) {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			docs := countDocs(t, data)
			d := &audit.Decoded{}
			_ = audit.DecodeYAML(bytes.NewReader(data), path, d) // rejected documents are in d.Rejected
			if got := len(d.CCNPs) + len(d.CNPs) + len(d.Rejected) + len(d.Skipped); got != docs {
				t.Errorf("%d documents, but %d loaded, %d rejected, %d skipped", docs, len(d.CCNPs)+len(d.CNPs), len(d.Rejected), len(d.Skipped))
			}
			for _, r := range d.Rejected {
				if !strings.HasPrefix(r.Where, path+"#") {
					t.Errorf("rejected document %v does not name %s#N", r, path)
				}
				t.Logf("rejected: %v", r)
			}
			_, berr := d.Build(audit.Config{})
			for _, e := range rejectedDocs(&audit.Decoded{}, berr) {
				var de *audit.DocError
				if !errors.As(e, &de) || !strings.HasPrefix(de.Where, path+"#") {
					t.Errorf("invalid policy %v does not name %s#N", e, path)
				}
				t.Logf("invalid: %v", e)
			}
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// countDocs counts the non-empty YAML documents of a file.
func countDocs(t *testing.T, data []byte) int {
	t.Helper()
	yr := k8syaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	n := 0
	for {
		raw, err := yr.Read()
		if err != nil {
			return n
		}
		var m map[string]any
		if k8syaml.Unmarshal(raw, &m) == nil && len(m) > 0 {
			n++
		}
	}
}
