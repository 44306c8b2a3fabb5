// Package mermaidcheck checks the Mermaid graphs recommender writes into REPORT.md, GRAPH.md
// and pull request bodies (pkg/synth's Graph.Mermaid). It is a test helper only: nothing
// outside _test.go files imports it.
//
// Check parses a block structurally against the subset of flowchart syntax the renderer
// emits: every line is a node, subgraph, edge, classDef, class or linkStyle statement, labels
// are quoted and hold only safe characters or Mermaid entities, every edge and class names
// declared nodes, every linkStyle an existing edge. It runs everywhere.
//
// Parse additionally hands the blocks to the real Mermaid parser (the mermaid npm package
// under node, with jsdom for the DOM it expects). build.sh installs it into the cache; the
// check is optional and Parse skips the test, saying so, when node or the install is absent.
package mermaidcheck
