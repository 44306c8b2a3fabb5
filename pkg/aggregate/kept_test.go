package aggregate

import (
	"bytes"
	"errors"
	"maps"
	"path/filepath"
	"slices"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// Ensure that kept values survive a reopen and a Compact, are read read-only, replace and
// forget as asked, and that a damaged one is told apart and left out while the others are
// still returned.
func TestKept(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "store.db")
	s := openStore(t, path, Options{})
	if got, err := s.Kept(); err != nil || len(got) != 0 {
		t.Fatalf("Kept on a new store = %v, %v; want nothing", got, err)
	}
	if err := s.Forget("replica-1"); err != nil {
		t.Fatalf("Forget before any Keep: %v", err)
	}
	big := bytes.Repeat([]byte("edge"), 100_000) // overflow pages
	want := map[string][]byte{"replica-1": []byte("one"), "replica-2": big, "replica-3": {}}
	if err := s.Keep(map[string][]byte{"replica-1": want["replica-1"]}); err != nil {
		t.Fatal(err)
	}
	if err := s.Keep(map[string][]byte{"replica-2": big, "replica-3": {}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Keep(map[string][]byte{"replica-1": []byte("one, again")}); err != nil {
		t.Fatal(err)
	}
	want["replica-1"] = []byte("one, again")
	if err := s.Keep(map[string][]byte{"": []byte("x"), "replica-1": []byte("lost")}); err == nil {
		t.Error("Keep with an empty key succeeded")
	}
	check := func(s *Store, want map[string][]byte) {
		t.Helper()
		got, err := s.Kept()
		if err != nil {
			t.Fatal(err)
		}
		if !maps.EqualFunc(got, want, bytes.Equal) {
			t.Fatalf("Kept = %d values, want %d (%v)", len(got), len(want), slices.Sorted(maps.Keys(got)))
		}
	}
	check(s, want)
	closeChecked(t, s)

	ro := openStore(t, path, Options{ReadOnly: true})
	check(ro, want)
	closeChecked(t, ro)

	out := filepath.Join(dir, "copy.db")
	if _, _, err := Compact(path, out, Options{}); err != nil {
		t.Fatal(err)
	}
	c := openStore(t, out, Options{})
	check(c, want)
	if err := c.Forget("replica-3"); err != nil {
		t.Fatal(err)
	}
	delete(want, "replica-3")
	check(c, want)
	closeChecked(t, c)

	// A flipped byte inside a value's payload: that value is left out, named, the rest read.
	db, err := bolt.Open(out, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketKept)
		v := bytes.Clone(b.Get([]byte("replica-2")))
		v[len(v)/2] ^= 0x20
		return b.Put([]byte("replica-2"), v)
	})
	if err == nil {
		err = db.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	d := openStore(t, out, Options{})
	got, err := d.Kept()
	if !errors.Is(err, ErrCorrupt) || !bytes.Contains([]byte(err.Error()), []byte(`"replica-2"`)) {
		t.Fatalf("Kept of a damaged value: err = %v, want ErrCorrupt naming replica-2", err)
	}
	delete(want, "replica-2")
	if !maps.EqualFunc(got, want, bytes.Equal) {
		t.Fatalf("Kept with one damaged value = %v, want the others %v", slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want)))
	}
}
