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

// WriteDir writes one <name>.yaml per proposal, REPORT.md and GRAPH.md into dir (created if needed).
// YAML files of earlier runs that hold a recommender-managed policy no longer proposed are
// removed, so that applying the directory never re-applies a stale policy; files recommender
// did not generate are left alone.
func WriteDir(dir string, res *Result) (*WriteSummary, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create output directory: %w", err)
	}
	sum := &WriteSummary{}
	keep := map[string]bool{}
	for _, p := range res.Proposals {
		b, err := MarshalPolicy(p.Policy)
		if err != nil {
			return nil, err
		}
		path := filepath.Join(dir, p.Name+".yaml")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			return nil, fmt.Errorf("write policy: %w", err)
		}
		keep[path] = true
		sum.Written = append(sum.Written, path)
	}
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

// managedFiles lists the YAML files in dir that hold a recommender-managed CCNP.
func managedFiles(dir string) ([]string, error) {
	paths, err := yamlFiles(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, path := range paths {
		ps, err := readFile(path)
		if err != nil {
			continue // not ours to judge: a file we cannot read as a CCNP is left alone
		}
		if len(ps) > 0 && slices.IndexFunc(ps, func(p *v2.CiliumClusterwideNetworkPolicy) bool {
			return p.Labels[LabelManagedBy] != ManagedByValue
		}) < 0 {
			out = append(out, path)
		}
	}
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

// readFile reads the CCNPs of one YAML file; WriteDir uses it to tell its own files from
// others'. Reading a policy directory is audit.LoadDir's job (diff and check share it).
func readFile(path string) ([]*v2.CiliumClusterwideNetworkPolicy, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	var out []*v2.CiliumClusterwideNetworkPolicy
	for i, doc := range splitDocuments(raw) {
		var meta struct {
			Kind string `json:"kind"`
		}
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", path, i+1, err)
		}
		if meta.Kind != v2.CCNPKindDefinition {
			continue
		}
		p := &v2.CiliumClusterwideNetworkPolicy{}
		if err := yaml.UnmarshalStrict(doc, p); err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", path, i+1, err)
		}
		out = append(out, p)
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
