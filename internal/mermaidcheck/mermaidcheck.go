package mermaidcheck

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/recommender/recommender/internal/testbin"
)

// EnvScript names the environment variable that points at the check.mjs build.sh installs.
const EnvScript = "RECOMMENDER_MERMAID"

// Mermaid's default limits (mermaid 11 config maxEdges, maxTextSize): above them it draws an
// error instead of the diagram.
const (
	maxEdges    = 500
	maxTextSize = 50000
)

// Blocks returns the body of every ```mermaid block of a Markdown document, in order.
func Blocks(md string) ([]string, error) {
	var out []string
	var cur *strings.Builder
	for i, line := range strings.Split(md, "\n") {
		switch {
		case cur == nil && line == "```mermaid":
			cur = &strings.Builder{}
		case cur != nil && line == "```":
			out = append(out, cur.String())
			cur = nil
		case cur != nil:
			if strings.HasPrefix(line, "```") {
				return nil, fmt.Errorf("line %d: fence inside a mermaid block", i+1)
			}
			cur.WriteString(line + "\n")
		}
	}
	if cur != nil {
		return nil, errors.New("unclosed mermaid block")
	}
	return out, nil
}

// label is a quoted label: safe characters, Mermaid entities (#35;) and line breaks only.
const label = `"(?:[A-Za-z0-9 .,:/=!*()\[\]{}+\-_@?~]|#[0-9]+;|<br/>)*"`

var (
	nodeLine     = regexp.MustCompile(`^(n[0-9]+)(?:\[\[` + label + `\]\]|\[` + label + `\]|\{\{` + label + `\}\}|\[/` + label + `/\]|\(\[` + label + `\]\)|\(` + label + `\))$`)
	subgraphLine = regexp.MustCompile(`^subgraph (ns[0-9]+)\[` + label + `\]$`)
	edgeLine     = regexp.MustCompile(`^(n[0-9]+) (?:-->|==>|-\.->|--x)(?:\|` + label + `\|)? (n[0-9]+)$`)
	style        = `[a-z-]+:[#0-9a-z. ]+(?:,[a-z-]+:[#0-9a-z. ]+)*`
	classDefLine = regexp.MustCompile(`^classDef ([a-z]+) ` + style + `$`)
	classLine    = regexp.MustCompile(`^class (n[0-9]+(?:,n[0-9]+)*) ([a-z]+)$`)
	linkLine     = regexp.MustCompile(`^linkStyle ([0-9]+(?:,[0-9]+)*) ` + style + `$`)
)

// Check parses one block (without its fences) structurally; see the package doc.
func Check(block string) error {
	if len(block) > maxTextSize {
		return fmt.Errorf("%d characters, more than Mermaid's default maxTextSize %d", len(block), maxTextSize)
	}
	lines := strings.Split(strings.TrimSuffix(block, "\n"), "\n")
	if lines[0] != "flowchart LR" {
		return fmt.Errorf("line 1: %q, want flowchart LR", lines[0])
	}
	nodes, groups, classes := map[string]bool{}, map[string]bool{}, map[string]bool{}
	edges, depth := 0, 0
	declared := func(id string) error {
		if !nodes[id] {
			return fmt.Errorf("node %s used before it is declared", id)
		}
		return nil
	}
	for i, raw := range lines[1:] {
		n := i + 2
		line := strings.TrimLeft(raw, " ")
		var err error
		switch {
		case nodeLine.MatchString(line):
			id := nodeLine.FindStringSubmatch(line)[1]
			if nodes[id] {
				err = fmt.Errorf("node %s declared twice", id)
			}
			nodes[id] = true
		case subgraphLine.MatchString(line):
			id := subgraphLine.FindStringSubmatch(line)[1]
			if depth > 0 || groups[id] {
				err = fmt.Errorf("subgraph %s nested or declared twice", id)
			}
			groups[id] = true
			depth++
		case line == "end":
			if depth == 0 {
				err = errors.New("end without subgraph")
			}
			depth--
		case edgeLine.MatchString(line):
			m := edgeLine.FindStringSubmatch(line)
			err = errors.Join(declared(m[1]), declared(m[2]))
			edges++
		case classDefLine.MatchString(line):
			classes[classDefLine.FindStringSubmatch(line)[1]] = true
		case classLine.MatchString(line):
			m := classLine.FindStringSubmatch(line)
			if !classes[m[2]] {
				err = fmt.Errorf("class %s used before its classDef", m[2])
			}
			for id := range strings.SplitSeq(m[1], ",") {
				err = errors.Join(err, declared(id))
			}
		case linkLine.MatchString(line):
			for s := range strings.SplitSeq(linkLine.FindStringSubmatch(line)[1], ",") {
				if k, _ := strconv.Atoi(s); k >= edges {
					err = errors.Join(err, fmt.Errorf("linkStyle %d: only %d edges", k, edges))
				}
			}
		default:
			err = errors.New("not a statement the renderer writes (or an unescaped character in a label)")
		}
		if err != nil {
			return fmt.Errorf("line %d: %q: %w", n, line, err)
		}
	}
	if depth != 0 {
		return errors.New("unclosed subgraph")
	}
	if edges > maxEdges {
		return fmt.Errorf("%d edges, more than Mermaid's default maxEdges %d", edges, maxEdges)
	}
	return nil
}

// CheckDocument runs Check on every mermaid block of a Markdown document and returns the
// blocks; a document with fewer than want blocks fails.
func CheckDocument(t testing.TB, name, md string, want int) []string {
	t.Helper()
	blocks, err := Blocks(md)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if len(blocks) < want {
		t.Errorf("%s: %d mermaid blocks, want at least %d", name, len(blocks), want)
	}
	for i, b := range blocks {
		if err := Check(b); err != nil {
			t.Errorf("%s: mermaid block %d: %v\n%s", name, i+1, err, b)
		}
	}
	return blocks
}

// Parse runs Mermaid's own parser on the blocks. It skips the test when node or the parser
// (build.sh; $RECOMMENDER_MERMAID or the cache) is not there: the check is optional.
func Parse(t testing.TB, blocks []string) {
	t.Helper()
	script := os.Getenv(EnvScript)
	if script == "" {
		script = filepath.Join(filepath.Dir(testbin.CacheDir()), "mermaid", "check.mjs")
	}
	node, err := exec.LookPath("node")
	if _, serr := os.Stat(script); err != nil || serr != nil {
		t.Skipf("mermaid parser not available (node: %v; %s: %v); install it with internal/mermaidcheck/build.sh", err, script, serr)
	}
	dir := t.TempDir()
	args := []string{script}
	for i, b := range blocks {
		path := filepath.Join(dir, fmt.Sprintf("block%03d.mmd", i+1))
		if err := os.WriteFile(path, []byte(b), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, path)
	}
	var out bytes.Buffer
	cmd := exec.CommandContext(t.Context(), node, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Errorf("mermaid parser: %v\n%s", err, out.String())
	}
}
