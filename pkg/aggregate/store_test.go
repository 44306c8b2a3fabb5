package aggregate

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"

	"github.com/recommender/recommender/pkg/flows"
)

var snapshotOpts = cmp.Options{cmp.AllowUnexported(Snapshot{}), cmpopts.EquateEmpty()}

// openStore opens a store in a temp dir and checks its consistency when the test ends.
func openStore(t testing.TB, path string, opts Options) *Store {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "store.db")
	}
	s, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeChecked(t, s) })
	return s
}

// closeChecked runs bbolt's consistency check and closes s, once.
func closeChecked(t testing.TB, s *Store) {
	t.Helper()
	if s.db.Path() == "" {
		return // closed already
	}
	if err := s.Check(); err != nil {
		t.Errorf("store check: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Error(err)
	}
}

// mixedEvents exercises every record kind: workloads, entities, world, DNS, HTTP, collapse, lost.
func mixedEvents() []*flows.Event {
	evs := []*flows.Event{
		flow(1, web, api, flows.ProtoTCP, 8080),
		flow(2, entity("host"), web, flows.ProtoTCP, 8080),
		dnsRequest(3, web, dns, "api.example.com."),
		dnsResponse(3, web, dns, "api.example.com.", "203.0.113.7", "2001:db8::7"),
		flow(4, web, world("203.0.113.7"), flows.ProtoTCP, 443),
		flow(5, world("198.51.100.1"), web, flows.ProtoTCP, 443),
		with(flow(6, web, api, flows.ProtoTCP, 8080), func(e *flows.Event) {
			e.Type, e.L7 = flows.EventL7, &flows.L7{HTTP: &flows.HTTP{Method: "GET", Path: "/items"}}
		}),
		{Kind: flows.KindLost, Node: "node-1", Time: at(7), ID: 7, Lost: &flows.Lost{Count: 3}},
	}
	for p := range uint16(5) {
		evs = append(evs, flow(10+int(p), api, dns, flows.ProtoTCP, 2000+p*3))
	}
	return evs
}

// Ensure that what an Aggregator commits reads back identically, whole and per workload, and
// that a restored Aggregator continues exactly like the original.
func TestStoreRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	s := openStore(t, path, Options{})
	a := newAgg(t, Config{MaxPorts: 3})
	evs := mixedEvents()
	// Commit in three batches so updates, collapse deletions and rewrites all go through.
	for i, ev := range evs {
		a.Add(ev)
		if i%5 == 4 {
			if err := s.Commit(a.TakeBatch(), nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.Commit(a.TakeBatch(), nil); err != nil {
		t.Fatal(err)
	}
	want := a.Snapshot()
	got, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, got, snapshotOpts); d != "" {
		t.Errorf("Snapshot() mismatch (-aggregator +store):\n%s", d)
	}
	for _, w := range want.Workloads {
		key := w.Key.String()
		gw, ge, ok, err := s.Workload(key)
		if err != nil || !ok {
			t.Fatalf("Workload(%s) = %v, %v", key, ok, err)
		}
		if d := cmp.Diff(w, *gw, cmpopts.EquateEmpty()); d != "" {
			t.Errorf("Workload(%s) mismatch:\n%s", key, d)
		}
		if d := cmp.Diff(want.Edges[key], ge, cmpopts.EquateEmpty()); d != "" {
			t.Errorf("Workload(%s) edges mismatch:\n%s", key, d)
		}
	}
	if _, _, ok, err := s.Workload("shop/k8s:app"); ok || err != nil {
		t.Errorf("Workload(prefix of a key) = %v, %v; want not found", ok, err)
	}

	restored := newAgg(t, Config{MaxPorts: 3})
	if _, err := s.Load(restored); err != nil {
		t.Fatal(err)
	}
	more := []*flows.Event{
		flow(20, api, dns, flows.ProtoTCP, 100),                  // widens the collapsed range
		flow(21, web, world("2001:db8::7"), flows.ProtoTCP, 443), // DNS answer survived
		flow(22, web, api, flows.ProtoTCP, 8080),
	}
	for _, ev := range more {
		a.Add(ev)
		restored.Add(ev)
	}
	if d := cmp.Diff(a.Snapshot(), restored.Snapshot(), snapshotOpts); d != "" {
		t.Errorf("restored aggregator diverged (-original +restored):\n%s", d)
	}
}

// Ensure that the cursor and the lifecycle hook's writes are committed with the batch, and
// that a failing hook rolls the whole batch back.
func TestStoreCommitAtomic(t *testing.T) {
	s := openStore(t, "", Options{})
	a := newAgg(t, Config{})
	cur := flows.NewCursor()
	ev := flow(1, web, api, flows.ProtoTCP, 80)
	a.Add(ev)
	cur.Advance(ev)
	b := a.TakeBatch()
	b.Cursor = cur
	if err := s.Commit(b, func(l *Lifecycle) error { return l.Put("shop/k8s:app=web", []byte("audit")) }); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Lifecycle("shop/k8s:app=web"); err != nil || string(v) != "audit" {
		t.Errorf("Lifecycle = %q, %v; want audit", v, err)
	}
	got, err := s.Cursor()
	if err != nil || !got.Equal(cur) {
		t.Errorf("Cursor() = %v, %v; want the committed one", got, err)
	}

	ev2 := flow(2, web, api, flows.ProtoTCP, 81)
	a.Add(ev2)
	cur2 := cur.Clone()
	cur2.Advance(ev2)
	b = a.TakeBatch()
	b.Cursor = cur2
	err = s.Commit(b, func(l *Lifecycle) error {
		if err := l.Put("shop/k8s:app=web", []byte("promoted")); err != nil {
			return err
		}
		return errors.New("refused")
	})
	if err == nil {
		t.Fatal("Commit with failing hook succeeded")
	}
	snap, _ := s.Snapshot()
	if snap.Flows != 1 || snap.EdgeCount() != 2 {
		t.Errorf("after rolled back commit: flows=%d edges=%d, want 1 and 2", snap.Flows, snap.EdgeCount())
	}
	if got, _ := s.Cursor(); !got.Equal(cur) {
		t.Error("cursor moved by a rolled back commit")
	}
	if v, _ := s.Lifecycle("shop/k8s:app=web"); string(v) != "audit" {
		t.Errorf("Lifecycle = %q after rolled back commit, want audit", v)
	}
}

// fileState is what must not change when Open refuses a file.
type fileState struct {
	data  []byte
	mtime time.Time
}

func stateOf(t *testing.T, path string) fileState {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fileState{b, st.ModTime()}
}

// Ensure that corrupt, foreign, newer-schema and locked files give clear errors naming the
// file and are never modified.
func TestOpenRefuses(t *testing.T) {
	tests := []struct {
		name    string
		make    func(t *testing.T, path string)
		wantErr error
		wantMsg string
	}{
		{
			name: "garbage",
			make: func(t *testing.T, path string) {
				if err := os.WriteFile(path, bytes.Repeat([]byte("not a database "), 2000), 0o600); err != nil {
					t.Fatal(err)
				}
			},
			wantErr: ErrCorrupt,
			wantMsg: "restore it from a backup",
		},
		{
			name: "short garbage",
			make: func(t *testing.T, path string) {
				if err := os.WriteFile(path, []byte("hello"), 0o600); err != nil {
					t.Fatal(err)
				}
			},
			wantErr: ErrCorrupt,
		},
		{
			name: "foreign bbolt file",
			make: func(t *testing.T, path string) {
				db, err := bolt.Open(path, 0o600, nil)
				if err != nil {
					t.Fatal(err)
				}
				db.Update(func(tx *bolt.Tx) error {
					b, _ := tx.CreateBucket([]byte("someone-elses"))
					return b.Put([]byte("k"), []byte("v"))
				})
				db.Close()
			},
			wantErr: ErrNotStore,
			wantMsg: "someone-elses",
		},
		{
			name: "meta bucket with a foreign format",
			make: func(t *testing.T, path string) {
				db, err := bolt.Open(path, 0o600, nil)
				if err != nil {
					t.Fatal(err)
				}
				db.Update(func(tx *bolt.Tx) error {
					b, _ := tx.CreateBucket([]byte("meta"))
					return b.Put([]byte("format"), []byte("other-tool"))
				})
				db.Close()
			},
			wantErr: ErrNotStore,
		},
		{
			name: "newer schema",
			make: func(t *testing.T, path string) {
				s, err := Open(path, Options{})
				if err != nil {
					t.Fatal(err)
				}
				s.db.Update(func(tx *bolt.Tx) error { return putSchema(tx.Bucket(bucketMeta), schemaVersion+1) })
				s.Close()
			},
			wantErr: ErrSchema,
			wantMsg: "newer recommender",
		},
		{
			name: "empty file",
			make: func(t *testing.T, path string) {
				if err := os.WriteFile(path, nil, 0o600); err != nil {
					t.Fatal(err)
				}
			},
			wantErr: ErrNotStore,
			wantMsg: "remove it to start a new store",
		},
		{
			name:    "truncated to 16 KiB",
			make:    func(t *testing.T, path string) { truncate(t, populated(t, path), 16<<10) },
			wantErr: ErrCorrupt,
			wantMsg: "truncated",
		},
		{
			// bbolt itself refuses a file shorter than its two meta pages, with an error of
			// its own (found by FuzzOpen).
			name:    "truncated inside its second meta page",
			make:    func(t *testing.T, path string) { truncate(t, populated(t, path), int64(os.Getpagesize()*3/2)) },
			wantErr: ErrCorrupt,
			wantMsg: "restore it from a backup",
		},
		{
			name:    "truncated to half its size",
			make:    func(t *testing.T, path string) { p := populated(t, path); truncate(t, p, dataSize(t, p)/2) },
			wantErr: ErrCorrupt,
			wantMsg: "restore it from a backup",
		},
		{
			name: "edges root page overwritten by random bytes",
			make: func(t *testing.T, path string) {
				overwritePage(t, populated(t, path), bucketRoot(t, path, bucketEdges), 1)
			},
			wantErr: ErrCorrupt,
			wantMsg: "restore it from a backup",
		},
		{
			name: "journal root page overwritten by random bytes",
			make: func(t *testing.T, path string) {
				overwritePage(t, populated(t, path), bucketRoot(t, path, bucketJournal), 4)
			},
			wantErr: ErrCorrupt,
			wantMsg: "restore it from a backup",
		},
		{
			name: "journal chunk overwritten by random bytes",
			make: func(t *testing.T, path string) {
				overwritePage(t, populated(t, path), chunkPage(t, path, bucketJournal), 5)
			},
			wantErr: ErrCorrupt,
			wantMsg: "checksum",
		},
		{
			name: "edge tree chunk overwritten by random bytes",
			make: func(t *testing.T, path string) {
				overwritePage(t, populated(t, path), chunkPage(t, path, bucketEdges), 6)
			},
			wantErr: ErrCorrupt,
			wantMsg: "checksum",
		},
		{
			name: "workloads root page overwritten by random bytes",
			make: func(t *testing.T, path string) {
				overwritePage(t, populated(t, path), bucketRoot(t, path, bucketWorkloads), 2)
			},
			wantErr: ErrCorrupt,
			wantMsg: "restore it from a backup",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "store.db")
			tt.make(t, path)
			before := stateOf(t, path)
			for _, ro := range []bool{false, true} {
				s, err := Open(path, Options{ReadOnly: ro})
				if err == nil {
					s.Close()
					t.Fatalf("Open(readOnly=%v) succeeded", ro)
				}
				if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tt.wantMsg) {
					t.Errorf("Open(readOnly=%v) = %v; want %v naming %s and saying %q", ro, err, tt.wantErr, path, tt.wantMsg)
				}
			}
			if after := stateOf(t, path); !bytes.Equal(before.data, after.data) || !before.mtime.Equal(after.mtime) {
				t.Error("Open modified the refused file")
			}
		})
	}
}

// Ensure that a store held by another writer is reported as locked after the timeout, and not
// modified.
func TestOpenLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	holder := openStore(t, path, Options{})
	a := newAgg(t, Config{})
	a.Add(flow(1, web, api, flows.ProtoTCP, 80))
	if err := holder.Commit(a.TakeBatch(), nil); err != nil {
		t.Fatal(err)
	}
	before := stateOf(t, path)
	for _, ro := range []bool{false, true} {
		_, err := Open(path, Options{Timeout: 50 * time.Millisecond, ReadOnly: ro})
		want := fmt.Sprintf("store %s is locked by another process", path)
		if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), want) {
			t.Errorf("Open(readOnly=%v) = %v; want %q", ro, err, want)
		}
	}
	if after := stateOf(t, path); !bytes.Equal(before.data, after.data) || !before.mtime.Equal(after.mtime) {
		t.Error("Open modified the locked file")
	}
}

// Ensure that a bbolt file without any bucket (creation interrupted before the first commit)
// becomes a store, and that a missing file is not created read-only.
func TestOpenCompletesNewStore(t *testing.T) {
	dir := t.TempDir()
	bare := filepath.Join(dir, "bare.db")
	db, err := bolt.Open(bare, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	closeChecked(t, openStore(t, bare, Options{}))
	s, err := Open(bare, Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("reopen %s read-only: %v", bare, err)
	}
	s.Close()
	if _, err := Open(filepath.Join(dir, "missing.db"), Options{ReadOnly: true}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Open(missing, read-only) = %v, want not exist", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "missing.db")); !errors.Is(err, os.ErrNotExist) {
		t.Error("read-only Open created the file")
	}
}

// Ensure that migrations run in order, record each version, and that a missing step fails.
func TestMigrate(t *testing.T) {
	s := openStore(t, "", Options{})
	var ran []uint32
	steps := []migration{
		func(tx *bolt.Tx) error { ran = append(ran, 1); return nil },
		func(tx *bolt.Tx) error { ran = append(ran, 2); return nil },
	}
	err := s.db.Update(func(tx *bolt.Tx) error { return migrate(tx, 1, 3, steps, s.log) })
	if err != nil || fmt.Sprint(ran) != "[1 2]" {
		t.Fatalf("migrate 1->3 ran %v, err %v", ran, err)
	}
	s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keySchema); !bytes.Equal(v, []byte{0, 0, 0, 3}) {
			t.Errorf("schema after migration = %v, want 3", v)
		}
		return nil
	})
	err = s.db.Update(func(tx *bolt.Tx) error { return migrate(tx, 3, 4, steps, s.log) })
	if !errors.Is(err, ErrSchema) {
		t.Errorf("migrate without a step = %v, want ErrSchema", err)
	}
}

// Ensure that Expire removes stale data in one commit and that Compact shrinks the file while
// keeping every live record, in place or into a new file.
func TestExpireAndCompact(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "store.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	a := newAgg(t, Config{MaxPorts: 1 << 16})
	for i := range 4000 {
		a.Add(flow(i/200, web, api, flows.ProtoTCP, uint16(i+1)))
		if i%400 == 399 {
			if err := s.Commit(a.TakeBatch(), nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	n, err := s.Expire(at(19))
	if err != nil || n != 2*3800 {
		t.Fatalf("Expire = %d, %v; want %d", n, err, 2*3800)
	}
	want, _ := s.Snapshot()
	if want.EdgeCount() != 400 {
		t.Fatalf("edges after expire = %d, want 400", want.EdgeCount())
	}
	s.Close()

	if _, _, err := Compact(path, path, Options{}); err == nil {
		t.Error("Compact onto an existing --out succeeded")
	}
	out := filepath.Join(dir, "copy.db")
	for _, dst := range []string{out, ""} {
		before, after, err := Compact(path, dst, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if after >= before {
			t.Errorf("Compact(%q): %d -> %d bytes, want smaller", dst, before, after)
		}
		check := out
		if dst == "" {
			check = path
		}
		c := openStore(t, check, Options{ReadOnly: true})
		got, err := c.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(want, got, snapshotOpts); d != "" {
			t.Errorf("compacted store differs:\n%s", d)
		}
		closeChecked(t, c)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "*.compact-*")); len(m) != 0 {
		t.Errorf("temporary files left: %v", m)
	}
}

// Ensure that commits feed the store metrics.
func TestStoreMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	s := openStore(t, "", Options{Registerer: reg})
	a := newAgg(t, Config{})
	a.Add(flow(1, web, api, flows.ProtoTCP, 80))
	if err := s.Commit(a.TakeBatch(), nil); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		want float64
	}{
		{"recommender_store_commit_duration_seconds", 1}, {"recommender_store_commits_total", 1},
		{"recommender_store_edges", 2}, {"recommender_store_workloads", 2},
	} {
		if got := gather(t, reg, c.name, "", ""); got != c.want {
			t.Errorf("%s = %v, want %v", c.name, got, c.want)
		}
	}
	if got := gather(t, reg, "recommender_store_size_bytes", "", ""); got <= 0 {
		t.Errorf("recommender_store_size_bytes = %v, want > 0", got)
	}
}

// populated writes a store at path large enough that each bucket has pages of its own: the
// first batch is folded into the edge tree, the second stays in the journal.
func populated(t *testing.T, path string) string {
	t.Helper()
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	a := newAgg(t, Config{})
	for i := range 1000 {
		a.Add(flow(i, workload("ns", fmt.Sprintf("k8s:app=c%d", i%40)), workload("ns", fmt.Sprintf("k8s:app=s%d", i%15)), flows.ProtoTCP, uint16(1000+i%20)))
		if i == 599 {
			if err := s.Commit(a.TakeBatch(), nil); err != nil {
				t.Fatal(err)
			}
			fold(t, s)
		}
	}
	if err := s.Commit(a.TakeBatch(), nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// dataSize is the size of the pages in use, as the meta page says: bbolt grows the file
// ahead of them.
func dataSize(t *testing.T, path string) int64 {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var size int64
	db.View(func(tx *bolt.Tx) error {
		size = tx.Size()
		return nil
	})
	return size
}

func truncate(t *testing.T, path string, size int64) {
	t.Helper()
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
}

// bucketRoot returns the page holding the root of a top-level bucket.
func bucketRoot(t *testing.T, path string, name []byte) int {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var root int
	db.View(func(tx *bolt.Tx) error {
		root = int(tx.Bucket(name).RootPage())
		return nil
	})
	if root == 0 {
		t.Fatalf("bucket %s is inline; the fixture needs more data", name)
	}
	return root
}

// chunkPage returns a page in the middle of the chunks of bucket (the journal or the edge
// tree): bbolt stores the large values of a leaf in the pages that follow it, which it reads
// as raw bytes, so only the chunks' checksums can tell they were damaged.
func chunkPage(t *testing.T, path string, bucket []byte) int {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, PreLoadFreelist: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	page := 0
	db.View(func(tx *bolt.Tx) error {
		root := tx.Bucket(bucket).RootPage()
		if info, err := tx.Page(int(root)); err == nil && info.Type == "leaf" && info.OverflowCount >= 2 {
			page = int(root) + info.OverflowCount/2
		}
		return nil
	})
	if page == 0 {
		t.Fatalf("bucket %s is not one leaf with overflow pages; the fixture needs other data", bucket)
	}
	return page
}

// overwritePage replaces one 4 KiB page of path with seeded random bytes.
func overwritePage(t *testing.T, path string, page int, seed uint64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, os.Getpagesize())
	r := rand.New(rand.NewPCG(seed, uint64(page)))
	for i := range buf {
		buf[i] = byte(r.Uint32())
	}
	if _, err := f.WriteAt(buf, int64(page*len(buf))); err != nil {
		t.Fatal(err)
	}
}

// Ensure that any single page overwritten by random bytes either leaves a readable store or is
// refused as ErrCorrupt by both opening paths, never panics, and is never written to.
func TestOpenDamagedPages(t *testing.T) {
	dir := t.TempDir()
	pristine := populated(t, filepath.Join(dir, "pristine.db"))
	orig, err := os.ReadFile(pristine)
	if err != nil {
		t.Fatal(err)
	}
	// The pages in use: bbolt grows the file ahead of them, and the tail is never read.
	pages := int(dataSize(t, pristine)) / os.Getpagesize()
	refused := 0
	for page := 2; page < pages; page++ {
		path := filepath.Join(dir, fmt.Sprintf("page%d.db", page))
		if err := os.WriteFile(path, orig, 0o600); err != nil {
			t.Fatal(err)
		}
		overwritePage(t, path, page, 7)
		before := stateOf(t, path)
		for _, ro := range []bool{true, false} {
			s, err := Open(path, Options{ReadOnly: ro})
			if err == nil {
				if _, err := s.Snapshot(); err != nil && !errors.Is(err, ErrCorrupt) {
					t.Errorf("page %d: Snapshot after Open(readOnly=%v) = %v, want nil or ErrCorrupt", page, ro, err)
				}
				s.Close()
				continue
			}
			refused++
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) {
				t.Errorf("page %d: Open(readOnly=%v) = %v, want ErrCorrupt naming the file", page, ro, err)
			}
			if after := stateOf(t, path); !bytes.Equal(before.data, after.data) {
				t.Fatalf("page %d: Open(readOnly=%v) refused the file but wrote to it", page, ro)
			}
		}
	}
	if refused == 0 {
		t.Error("no damaged page was detected")
	}
}

// Ensure that damage found after Open (the file changed under a running store) is an error,
// not a panic, and that the store then refuses to write.
func TestStoreDamagedWhileOpen(t *testing.T) {
	path := populated(t, filepath.Join(t.TempDir(), "store.db"))
	root := bucketRoot(t, path, bucketEdges)
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	overwritePage(t, path, root, 3)
	if _, err := s.Snapshot(); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) {
		t.Fatalf("Snapshot of a damaged store = %v, want ErrCorrupt naming %s", err, path)
	}
	before := stateOf(t, path)
	a := newAgg(t, Config{})
	a.Add(flow(1, web, api, flows.ProtoTCP, 80))
	if err := s.Commit(a.TakeBatch(), nil); !errors.Is(err, ErrFailed) {
		t.Errorf("Commit after damage = %v, want ErrFailed", err)
	}
	if after := stateOf(t, path); !bytes.Equal(before.data, after.data) {
		t.Error("Commit wrote to a damaged store")
	}
}

// Ensure that the store reads the edge tree merged with the journal exactly as the aggregator
// holds its edges, whichever of them hold an edge's newest state: over batches that create,
// update, collapse and expire edges (an edge expired and seen again, deletions of edges only
// the tree holds), batches larger than a journal chunk, and folds after any batch.
func TestJournalMatchesAggregator(t *testing.T) {
	for _, foldEvery := range []int{0, 1, 3} {
		t.Run(fmt.Sprintf("fold-every=%d", foldEvery), func(t *testing.T) {
			s := openStore(t, "", Options{})
			a := newAgg(t, Config{MaxPorts: 8})
			for round := range 12 {
				// Rounds alternate between many edges (several chunks) and a few.
				n := 150
				if round%2 == 0 {
					n = 1500
				}
				for i := range n {
					c := workload("ns", fmt.Sprintf("k8s:app=c%d", (i+round)%60))
					srv := workload("ns", fmt.Sprintf("k8s:app=s%d", i%7))
					// Ports beyond MaxPorts collapse the group in later rounds.
					a.Add(flow(100*round+i%100, c, srv, flows.ProtoTCP, uint16(8000+(i/60+round)%10)))
				}
				if round%4 == 3 {
					// Expire what rounds before the previous one saw: deletions of edges in
					// the tree and in the journal, some seen again in the next round.
					if a.Expire(at(100*(round-1))) == 0 {
						t.Fatalf("round %d: nothing expired", round)
					}
				}
				checkTables(t, a)
				if err := s.Commit(a.TakeBatch(), nil); err != nil {
					t.Fatal(err)
				}
				checkTables(t, a)
				if foldEvery > 0 && round%foldEvery == 0 {
					fold(t, s)
				}
				want := a.Snapshot()
				got, err := s.Snapshot()
				if err != nil {
					t.Fatal(err)
				}
				if d := cmp.Diff(want, got, snapshotOpts); d != "" {
					t.Fatalf("round %d: store differs from the aggregator (-aggregator +store):\n%s", round, d)
				}
				for i, w := range want.Workloads {
					if i%5 != round%5 {
						continue // a fifth of them per round keeps the test fast
					}
					_, edges, ok, err := s.Workload(w.Key.String())
					if err != nil || !ok {
						t.Fatalf("round %d: Workload(%s) = %v, %v", round, w.Key, ok, err)
					}
					if d := cmp.Diff(want.Edges[w.Key.String()], edges, snapshotOpts); d != "" {
						t.Fatalf("round %d: Workload(%s) edges (-aggregator +store):\n%s", round, w.Key, d)
					}
				}
			}
		})
	}
}

// Ensure that commits fold the journal once it holds foldBatches batches, however small.
func TestJournalFoldsAfterBatches(t *testing.T) {
	s := openStore(t, "", Options{})
	a := newAgg(t, Config{})
	for i := range foldBatches {
		a.Add(flow(i, web, api, flows.ProtoTCP, uint16(1000+i)))
		if err := s.Commit(a.TakeBatch(), nil); err != nil {
			t.Fatal(err)
		}
	}
	s.db.View(func(tx *bolt.Tx) error {
		rec, err := readJournalRecord(tx.Bucket(bucketMeta))
		if err != nil || rec.Batches != 0 || rec.Entries != 0 || rec.Tree != 2*foldBatches {
			t.Errorf("journal record after %d batches = %+v, %v; want it folded into a tree of %d edges", foldBatches, rec, err, 2*foldBatches)
		}
		if k, _ := tx.Bucket(bucketJournal).Cursor().First(); k != nil {
			t.Errorf("journal after the fold holds %q", k)
		}
		if n := len(treeEdges(t, tx)); n != 2*foldBatches {
			t.Errorf("edge tree holds %d edges, want %d", n, 2*foldBatches)
		}
		return nil
	})
}

// Ensure that a chunk whose checksum holds but whose entries do not (a key or value sharing
// more bytes than the previous one has, a length past the chunk's end, an empty key) is
// reported as corrupt, not read past or panicked on, in both chunk formats.
func TestChunkMalformedEntries(t *testing.T) {
	uv := func(n int) []byte { return binary.AppendUvarint(nil, uint64(n)) }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	for _, c := range []struct {
		name   string
		format byte
		body   []byte
	}{
		{"key sharing past the previous key", journalFormat, cat(uv(0), uv(3), []byte("abc"), uv(0), uv(1), []byte("v"), uv(4), uv(1), []byte("d"), uv(0), uv(1), []byte("v"))},
		{"value sharing past the previous value", journalFormat, cat(uv(0), uv(3), []byte("abc"), uv(0), uv(1), []byte("v"), uv(1), uv(1), []byte("d"), uv(2), uv(1), []byte("v"))},
		{"key past the end", journalFormat, cat(uv(0), uv(50), []byte("abc"))},
		{"value past the end", journalFormat, cat(uv(0), uv(3), []byte("abc"), uv(0), uv(50), []byte("v"))},
		{"empty key", journalFormat, cat(uv(0), uv(0), uv(0), uv(1), []byte("v"))},
		{"whole key past the end", journalFormatFull, cat(uv(50), []byte("abc"))},
		{"empty whole key", journalFormatFull, cat(uv(0), uv(1), []byte("v"))},
	} {
		t.Run(c.name, func(t *testing.T) {
			v := append([]byte{c.format, 0, 0, 0, 0}, c.body...)
			binary.BigEndian.PutUint32(v[1:5], crc32.Checksum(v[5:], castagnoli))
			s := edgeSource{seq: []byte{0, 0, 0, 0, 0, 0, 0, 7}}
			if !s.load(v) {
				t.Fatalf("load: %v", s.err)
			}
			for s.next() {
			}
			if !errors.Is(s.err, ErrCorrupt) || !strings.Contains(s.err.Error(), "batch 7: malformed entry") {
				t.Errorf("reading the chunk ended with %v, want ErrCorrupt for a malformed entry of batch 7", s.err)
			}
		})
	}
}

// Ensure that entries written by chunkWriter read back as written, in order, across chunks and
// blocks: keys sharing prefixes of every length, deletions, and an entry larger than a chunk,
// which outgrows its block (blocks of one chunk here); each chunk is keyed by its prefix and
// last key.
func TestChunkWriterRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	type entry struct{ k, v []byte }
	var want []entry
	for i := range 3000 {
		k := fmt.Appendf(nil, "ns/app=%03d\x00%d", i/10, i)
		var v []byte
		switch {
		case i == 1500:
			v = bytes.Repeat([]byte("x"), journalChunk+1000)
		case rng.IntN(10) > 0: // else a deletion
			v = fmt.Appendf(nil, "value of ns/app=%03d %d", i/10, rng.IntN(1000))
		}
		want = append(want, entry{k, v})
	}
	slices.SortFunc(want, func(a, b entry) int { return bytes.Compare(a.k, b.k) })
	prefix := []byte{0, 0, 0, 0, 0, 0, 0, 9}
	var keys, chunks [][]byte
	w := chunkWriter{
		prefix: prefix,
		alloc:  func() []byte { return make([]byte, 0, journalChunk+5) },
		put: func(k, v []byte) error {
			keys, chunks = append(keys, k), append(chunks, v)
			return nil
		},
	}
	for _, e := range want {
		if err := w.add(e.k, e.v); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.flush(); err != nil {
		t.Fatal(err)
	}
	var got []entry
	for i, c := range chunks {
		s := edgeSource{seq: prefix}
		if !s.load(c) {
			t.Fatalf("chunk %d: %v", i, s.err)
		}
		for len(s.rest) > 0 && s.next() { // the chunk alone: no cursor to the next one
			got = append(got, entry{bytes.Clone(s.key), bytes.Clone(s.val)})
		}
		if s.err != nil {
			t.Fatalf("chunk %d: %v", i, s.err)
		}
		if last := got[len(got)-1].k; !bytes.Equal(keys[i], append(slices.Clone(prefix), last...)) {
			t.Errorf("chunk %d is keyed %q, want the prefix and its last key %q", i, keys[i], last)
		}
	}
	if len(chunks) < 3 {
		t.Errorf("%d chunks, want several", len(chunks))
	}
	if d := cmp.Diff(want, got, cmp.Comparer(func(a, b entry) bool { return bytes.Equal(a.k, b.k) && bytes.Equal(a.v, b.v) })); d != "" {
		t.Errorf("entries read back (-written +read):\n%s", d)
	}
}

// TestFoldDue: a journal folds when it holds foldRatio times the tree's edges; past
// foldBatches batches only once it holds an eighth of the tree (a fold rewrites the tree), and
// at maxBatches in any case.
func TestFoldDue(t *testing.T) {
	for _, tt := range []struct {
		name string
		rec  journalRecord
		want bool
	}{
		{"empty journal", journalRecord{Batches: maxBatches, Tree: 10}, false},
		{"twice the tree", journalRecord{Batches: 2, Entries: 2_000_000, Tree: 1_000_000}, true},
		{"below twice the tree", journalRecord{Batches: 2, Entries: 1_999_999, Tree: 1_000_000}, false},
		{"small tree counts as foldMinEdges", journalRecord{Batches: 1, Entries: 2*foldMinEdges - 1, Tree: 10}, false},
		{"quiet, few batches", journalRecord{Batches: foldBatches - 1, Entries: 500_000, Tree: 1_000_000}, false},
		{"quiet, many batches, small share", journalRecord{Batches: foldBatches, Entries: 3_000, Tree: 1_000_000}, false},
		{"quiet, many batches, an eighth", journalRecord{Batches: foldBatches, Entries: 125_000, Tree: 1_000_000}, true},
		{"quiet, small tree", journalRecord{Batches: foldBatches, Entries: foldBatches, Tree: 2 * foldBatches}, true},
		{"at the batch bound", journalRecord{Batches: maxBatches, Entries: 1, Tree: 1_000_000}, true},
	} {
		if got := foldDue(tt.rec); got != tt.want {
			t.Errorf("%s: foldDue(%+v) = %v, want %v", tt.name, tt.rec, got, tt.want)
		}
	}
}
