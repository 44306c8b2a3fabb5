package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "update .golden files")

// Ensure that the table shows every figure of a raw benchmark output with its ratios and
// targets (the edges target both missed and met), and says why a figure is missing (a skipped
// hubble row, absent benchmarks).
func TestRender(t *testing.T) {
	for _, name := range []string{"full", "hubble-skipped", "edges-ok", "empty"} {
		t.Run(name, func(t *testing.T) {
			in := filepath.Join("testdata", name+".txt")
			var out bytes.Buffer
			if err := run([]string{in}, &out); err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", name+".golden")
			if *update {
				if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if got := out.String(); got != string(want) {
				t.Errorf("table of %s =\n%s\nwant\n%s", in, got, want)
			}
		})
	}
}

// Ensure that repeated runs (-count) are summarized by their median.
func TestMedian(t *testing.T) {
	r := newResults()
	raw := strings.Join([]string{
		"BenchmarkEvaluate/policies=1000-2  100  10 ns/op  300 flows/s",
		"BenchmarkEvaluate/policies=1000-2  100  10 ns/op  100 flows/s",
		"BenchmarkEvaluate/policies=1000-2  100  10 ns/op  200 flows/s",
		"BenchmarkEvaluate/policies=1000-2  100  10 ns/op  900 flows/s",
	}, "\n")
	if err := r.parse(strings.NewReader(raw)); err != nil {
		t.Fatal(err)
	}
	if got, ok := r.get("BenchmarkEvaluate/policies=1000", "flows/s"); !ok || got != 250 {
		t.Errorf("get = %v, %v; want 250 (median of 100, 200, 300, 900)", got, ok)
	}
}

// Ensure that a malformed value is an error naming the benchmark, not a silent zero.
func TestParseError(t *testing.T) {
	err := newResults().parse(strings.NewReader("BenchmarkX-2  1  12 ns/op  abc flows/s\n"))
	if err == nil || !strings.Contains(err.Error(), "BenchmarkX") {
		t.Errorf("parse = %v, want an error naming BenchmarkX", err)
	}
}
