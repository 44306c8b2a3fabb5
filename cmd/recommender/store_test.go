package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Ensure that every command opening the store refuses an empty, truncated or overwritten file
// with one error naming the file and the fix, and that none of them writes to it (issue 15.1).
func TestDamagedStoreEveryCommand(t *testing.T) {
	dir := t.TempDir()
	rec := writeRecording(t, dir, 3000)
	good := filepath.Join(dir, "good.db")
	if _, err := execute(t, "ingest", "--flows", rec, "--db", good); err != nil {
		t.Fatal(err)
	}
	orig, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	damages := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "remove it to start a new store"},
		{"truncated", orig[:16<<10], "restore it from a backup, or move it away"},
		{"overwritten", overwritten(orig), "restore it from a backup, or move it away"},
	}
	commands := map[string][]string{
		"ingest":    {"ingest", "--flows", rec},
		"run":       {"run", "--flows", rec, "--once", "--metrics-addr", "", "--out", filepath.Join(dir, "out")},
		"status":    {"status"},
		"recommend": {"recommend", "--out", filepath.Join(dir, "rec")},
		"compact":   {"compact"},
	}
	for _, d := range damages {
		for name, args := range commands {
			t.Run(d.name+"/"+name, func(t *testing.T) {
				db := filepath.Join(t.TempDir(), "store.db")
				if err := os.WriteFile(db, d.data, 0o600); err != nil {
					t.Fatal(err)
				}
				_, err := execute(t, append(args, "--db", db)...)
				if err == nil || !strings.Contains(err.Error(), db) || !strings.Contains(err.Error(), d.want) {
					t.Fatalf("%s on a %s store = %v, want an error naming %s and saying %q", name, d.name, err, db, d.want)
				}
				after, rerr := os.ReadFile(db)
				if rerr != nil || !bytes.Equal(after, d.data) {
					t.Errorf("%s wrote to the %s store (err %v)", name, d.name, rerr)
				}
			})
		}
	}
}

// overwritten returns a copy of a store with every page after the meta pages replaced by a
// repeating non-zero pattern: whichever page bbolt reads first is damaged.
func overwritten(orig []byte) []byte {
	out := bytes.Clone(orig)
	for i := 2 * 4096; i < len(out); i++ {
		out[i] = byte(i*131 + 7)
	}
	return out
}
