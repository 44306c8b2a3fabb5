package flows

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// Ensure malformed lines are counted each and logged once per file, not once per line: a
// capture with a broken exporter can have millions.
func TestFileSourceLogsMalformedOncePerFile(t *testing.T) {
	body := lineSYN + "\n" + strings.Repeat("not json\n", 50) + lineSYN + "\n"
	a := writeFile(t, "a.jsonl", []byte(body))
	b := writeFile(t, "b.jsonl", []byte(body))
	var logBuf bytes.Buffer
	_, sum, err := readAll(t, FileConfig{Paths: []string{a, b}}, slog.New(slog.NewTextHandler(&logBuf, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if sum.Malformed != 100 {
		t.Errorf("malformed %d, want 100", sum.Malformed)
	}
	lines := strings.Split(strings.TrimSpace(logBuf.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "a.jsonl") || !strings.Contains(lines[0], "line=2") || !strings.Contains(lines[1], "b.jsonl") {
		t.Errorf("log has %d lines, want one per file naming its first malformed line:\n%s", len(lines), logBuf.String())
	}
}
