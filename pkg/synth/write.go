package synth

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	v2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"
	"sigs.k8s.io/yaml"
)

// ReportFile is the name of the report WriteDir writes next to the policies.
const ReportFile = "REPORT.md"

// GraphFile is the name of the graph of all proposed policies WriteDir writes next to them.
const GraphFile = "GRAPH.md"

// WriteSummary says what WriteDir did.
type WriteSummary struct {
	Written []string // policy files written, sorted
	Removed []string // files of recommender-managed policies no longer proposed, sorted
	Report  string   // path of REPORT.md
	Graph   string   // path of GRAPH.md
}

// WriteDir writes one policy file per proposal, REPORT.md and GRAPH.md into dir (created if needed):
// <name>.yaml for CCNPs, <namespace>/<name>.yaml for CNPs (Result.Kind), the layout
// `kubectl apply -R -f` and the check and diff commands read. Files of earlier runs that hold
// a recommender-managed policy no longer proposed (in dir or one of its namespace
// directories, of either kind) are removed, and a namespace directory left empty with them,
// so that applying the directory never re-applies a stale policy; files recommender did not
// generate are left alone.
func WriteDir(dir string, res *Result) (*WriteSummary, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create output directory: %w", err)
	}
	sum := &WriteSummary{}
	keep := map[string]bool{}
	for _, p := range res.Proposals {
		b, err := MarshalAs(p.Policy, res.Kind)
		if err != nil {
			return nil, err
		}
		path := filepath.Join(dir, p.Name+".yaml")
		if res.Kind.Namespaced() {
			ns, err := PolicyNamespace(p.Policy)
			if err != nil {
				return nil, err
			}
			if err := os.MkdirAll(filepath.Join(dir, ns), 0o755); err != nil {
				return nil, fmt.Errorf("create namespace directory: %w", err)
			}
			path = filepath.Join(dir, ns, p.Name+".yaml")
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			return nil, fmt.Errorf("write policy: %w", err)
		}
		keep[path] = true
		sum.Written = append(sum.Written, path)
	}
	slices.Sort(sum.Written)
	stale, err := managedFiles(dir)
	if err != nil {
		return nil, err
	}
	for _, path := range stale {
		if keep[path] {
			continue
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale policy: %w", err)
		}
		sum.Removed = append(sum.Removed, path)
		if sub := filepath.Dir(path); sub != filepath.Clean(dir) {
			if rest, err := os.ReadDir(sub); err == nil && len(rest) == 0 {
				if err := os.Remove(sub); err != nil {
					return nil, fmt.Errorf("remove empty namespace directory: %w", err)
				}
			}
		}
	}
	sum.Report = filepath.Join(dir, ReportFile)
	if err := os.WriteFile(sum.Report, RenderReport(res), 0o644); err != nil {
		return nil, fmt.Errorf("write report: %w", err)
	}
	sum.Graph = filepath.Join(dir, GraphFile)
	if err := os.WriteFile(sum.Graph, RenderGraph(res), 0o644); err != nil {
		return nil, fmt.Errorf("write graph: %w", err)
	}
	return sum, nil
}

// managedFiles lists the YAML files in dir and its immediate subdirectories (the namespace
// directories of CNPs) that hold recommender-managed CCNPs or CNPs only, sorted.
func managedFiles(dir string) ([]string, error) {
	paths, err := yamlFiles(dir)
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read policy directory: %w", err)
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		sub, err := yamlFiles(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		paths = append(paths, sub...)
	}
	var out []string
	for _, path := range paths {
		labels, err := readFile(path)
		if err != nil {
			continue // not ours to judge: a file we cannot read as a policy is left alone
		}
		if len(labels) > 0 && slices.IndexFunc(labels, func(l map[string]string) bool {
			return l[LabelManagedBy] != ManagedByValue
		}) < 0 {
			out = append(out, path)
		}
	}
	slices.Sort(out)
	return out, nil
}

func yamlFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read policy directory: %w", err)
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		if ext := filepath.Ext(e.Name()); ext == ".yaml" || ext == ".yml" {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	slices.Sort(out)
	return out, nil
}

// readFile returns the labels of the CCNPs and CNPs of one YAML file; WriteDir uses it to
// tell its own files from others'. Reading a policy directory is audit.LoadDir's job (diff
// and check share it).
func readFile(path string) ([]map[string]string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	var out []map[string]string
	for i, doc := range splitDocuments(raw) {
		var meta struct {
			Kind string `json:"kind"`
		}
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", path, i+1, err)
		}
		var obj interface{ GetLabels() map[string]string }
		switch meta.Kind {
		case v2.CCNPKindDefinition:
			obj = &v2.CiliumClusterwideNetworkPolicy{}
		case v2.CNPKindDefinition:
			obj = &v2.CiliumNetworkPolicy{}
		default:
			continue
		}
		if err := yaml.UnmarshalStrict(doc, obj); err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", path, i+1, err)
		}
		out = append(out, obj.GetLabels())
	}
	return out, nil
}

// splitDocuments splits a YAML stream on "---" lines, dropping empty documents.
func splitDocuments(raw []byte) [][]byte {
	var out [][]byte
	var cur bytes.Buffer
	flush := func() {
		if len(bytes.TrimSpace(stripComments(cur.Bytes()))) > 0 {
			out = append(out, slices.Clone(cur.Bytes()))
		}
		cur.Reset()
	}
	for line := range bytes.Lines(raw) {
		if t := bytes.TrimRight(line, " \t\r\n"); bytes.Equal(t, []byte("---")) {
			flush()
			continue
		}
		cur.Write(line)
	}
	flush()
	return out
}

func stripComments(b []byte) []byte {
	var out []byte
	for line := range bytes.Lines(b) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' {
			out = append(out, line...)
		}
	}
	return out
}
