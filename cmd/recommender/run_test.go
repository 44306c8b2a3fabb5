package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Ensure `run` refuses bad flag combinations before it creates the store or opens a port,
// naming the flag.
func TestRunFlagErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no store", []string{"--flows", "../../testdata/flows"}, "--db is required"},
		{"once from a relay", []string{"--once"}, "--once needs --flows"},
		{"negative window", []string{"--flows", "../../testdata/flows", "--window", "-5m"}, "--window -5m0s"},
		{"no window flows", []string{"--flows", "../../testdata/flows", "--min-window-flows", "0"}, "--min-window-flows 0"},
		{"lost ratio above 1", []string{"--flows", "../../testdata/flows", "--max-lost-ratio", "2"}, "--max-lost-ratio 2"},
		{"unknown apply mode", []string{"--flows", "../../testdata/flows", "--apply", "yes"}, "apply"},
		{"delivering shard", []string{"--namespace", "shop", "--apply", "enforce"}, "a shard cannot also deliver"},
		{"files and relay", []string{"--flows", "../../testdata/flows", "--hubble-server", "127.0.0.1:4245"}, "exclude each other"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := filepath.Join(t.TempDir(), "r.db")
			args := append([]string{"run", "--metrics-addr", ""}, tt.args...)
			if tt.name != "no store" {
				args = append(args, "--db", db)
			}
			_, err := execute(t, args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("run %v = %v, want an error containing %q", tt.args, err, tt.want)
			}
			if _, serr := os.Stat(db); serr == nil {
				t.Errorf("run %v created the store before refusing its flags", tt.args)
			}
		})
	}
}
