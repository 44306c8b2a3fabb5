package aggregate

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	bolt "go.etcd.io/bbolt"

	"github.com/recommender/recommender/pkg/flows"
)

// encodeEdgeJSON is schema 1's edge encoding; tests write schema-1 stores with it.
func encodeEdgeJSON(e *Edge) ([]byte, error) {
	r := edgeRecord{
		Workload:  workloadKeyRecord{Namespace: e.Workload.Namespace, Labels: e.Workload.Labels},
		Direction: e.Direction,
		Peer: peerRecord{Kind: e.Peer.Kind, Namespace: e.Peer.Namespace, Labels: e.Peer.Labels,
			Entity: e.Peer.Entity, FQDN: e.Peer.FQDN, CIDR: e.Peer.CIDR},
		Proto: e.Proto, Port: e.Port, EndPort: e.EndPort, Collapsed: e.Collapsed,
		Counts: countsRecord(e.Counts),
		First:  nanos(e.FirstSeen), Last: nanos(e.LastSeen),
		DNSNames: e.DNSNames, Truncated: e.Truncated,
	}
	for _, s := range e.HTTP {
		r.HTTP = append(r.HTTP, httpRecord(s))
	}
	return json.Marshal(&r)
}

// codecEdges are edges with every field of the encoding set, one per peer kind.
func codecEdges() []Edge {
	first := time.Date(2026, 3, 1, 12, 0, 0, 123, time.UTC)
	return []Edge{
		{
			EdgeKey: EdgeKey{Workload: WorkloadKey{Namespace: "shop", Labels: flows.NewLabels("k8s:app=web", "k8s:tier=front")},
				Direction: flows.DirectionEgress, Peer: Peer{Kind: PeerWorkload, Namespace: "shop", Labels: flows.NewLabels("k8s:app=api")},
				Proto: flows.ProtoTCP, Port: 1000, Collapsed: true},
			EndPort: 65535, Counts: Counts{Forwarded: 1 << 40, Dropped: 2, PolicyDrops: 1, Audit: 3, Other: 4, L7: 5},
			FirstSeen: first, LastSeen: first.Add(72 * time.Hour),
			HTTP:      []HTTPSample{{Method: "GET", Path: "/v1/orders/1", Count: 7}, {Method: "POST", Path: "/", Count: 1}},
			Truncated: true,
		},
		{
			EdgeKey: EdgeKey{Workload: WorkloadKey{Namespace: "shop", Labels: flows.NewLabels("k8s:app=web")},
				Direction: flows.DirectionEgress, Peer: Peer{Kind: PeerWorkload, Namespace: "kube-system", Labels: flows.NewLabels("k8s:k8s-app=kube-dns")},
				Proto: flows.ProtoUDP, Port: 53},
			EndPort: 53, Counts: Counts{Forwarded: 1}, FirstSeen: first, LastSeen: first,
			DNSNames: []string{"api.example.com", "db.example.com"},
		},
		{
			EdgeKey:  EdgeKey{Workload: WorkloadKey{Namespace: "shop"}, Direction: flows.DirectionIngress, Peer: Peer{Kind: PeerEntity, Entity: "host"}, Proto: flows.ProtoICMPv4, Port: 8},
			EndPort:  8,
			LastSeen: first, // a zero FirstSeen stays zero
		},
		{EdgeKey: EdgeKey{Workload: WorkloadKey{Namespace: "a"}, Direction: flows.DirectionEgress, Peer: Peer{Kind: PeerFQDN, FQDN: "api.example.com"}, Proto: flows.ProtoTCP, Port: 443}},
		{EdgeKey: EdgeKey{Workload: WorkloadKey{Namespace: "a"}, Direction: flows.DirectionEgress, Peer: Peer{Kind: PeerCIDR, CIDR: "2001:db8::7/128"}, Proto: flows.ProtoTCP, Port: 443}},
	}
}

// codecValues are the values of codecEdges as appendEdge wrote them before it was built from
// parts (commit 9ebd8ec): stores written by earlier versions hold these bytes.
var codecValues = []string{
	"010473686f70020b6b38733a6170703d7765620e6b38733a746965723d66726f6e7402010473686f70010b6b38733a6170703d61706901e807ffff03038080808080200201030405f681b4bdb6f6da98318080e8beb6ef750002034745540c2f76312f6f72646572732f310704504f5354012f01",
	"010473686f70010b6b38733a6170703d77656202010b6b7562652d73797374656d01146b38733a6b38732d6170703d6b7562652d646e7302353500010000000000f681b4bdb6f6da983100020f6170692e6578616d706c652e636f6d0e64622e6578616d706c652e636f6d00",
	"010473686f7000010204686f73740408080000000000000000f681b4bdb6f6da98310000",
	"0101610002030f6170692e6578616d706c652e636f6d01bb03000000000000000000000000",
	"0101610002040f323030313a6462383a3a372f31323801bb03000000000000000000000000",
}

// Ensure that every field of an edge survives the binary encoding, that the encoding is the
// one stores hold (codecValues), and that a value cut short, with bytes after its end or of
// another format fails to decode instead of reading as some other edge.
func TestEdgeCodec(t *testing.T) {
	for i, e := range codecEdges() {
		v := appendEdge(nil, &e)
		if got := hex.EncodeToString(v); got != codecValues[i] {
			t.Errorf("appendEdge(%s) =\n%s\nwant\n%s", renderEdge(&e), got, codecValues[i])
		}
		got, err := decodeEdge(v)
		if err != nil {
			t.Fatalf("decodeEdge(appendEdge(%s)) = %v", renderEdge(&e), err)
		}
		if d := cmp.Diff(e, got, cmpopts.EquateEmpty()); d != "" {
			t.Errorf("decodeEdge(appendEdge(%s)) (-want +got):\n%s", renderEdge(&e), d)
		}
		for n := range len(v) {
			if _, err := decodeEdge(v[:n]); !errors.Is(err, errEdgeValue) {
				t.Errorf("decodeEdge(first %d of %d bytes of %s) = %v, want errEdgeValue", n, len(v), renderEdge(&e), err)
			}
		}
		if _, err := decodeEdge(append(v, 0)); !errors.Is(err, errEdgeValue) {
			t.Errorf("decodeEdge(%s with a byte appended) = %v, want errEdgeValue", renderEdge(&e), err)
		}
		other := append([]byte{edgeFormat + 1}, v[1:]...)
		if _, err := decodeEdge(other); !errors.Is(err, errEdgeValue) {
			t.Errorf("decodeEdge(format %d) = %v, want errEdgeValue", edgeFormat+1, err)
		}
	}
}

// Ensure that an edge of a direction the Aggregator never keys on, in either encoding, fails to
// decode: restored, it would be written among another workload's edges.
func TestDecodeEdgeDirection(t *testing.T) {
	for _, dir := range []flows.Direction{flows.DirectionUnknown, 3, 4, 8, 255} {
		e := codecEdges()[0]
		e.Direction = dir
		if _, err := decodeEdge(appendEdge(nil, &e)); !errors.Is(err, errEdgeValue) {
			t.Errorf("decodeEdge(direction %d) = %v, want errEdgeValue", dir, err)
		}
		v, err := json.Marshal(edgeRecord{Direction: dir, Peer: peerRecord{Kind: PeerEntity, Entity: "world"}, Proto: flows.ProtoTCP, Port: 443})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := decodeEdgeJSON(v); !errors.Is(err, errEdgeValue) {
			t.Errorf("decodeEdgeJSON(direction %d) = %v, want errEdgeValue", dir, err)
		}
	}
}

// Ensure that a store written by an older schema (1: JSON edge values; 2: binary values, no
// journal; 3: a journal of chunks with whole keys; all three keep one bbolt key per edge in
// the tree) is refused read-only, and opened for writing is migrated to the current schema:
// edges in the binary encoding, in the tree's chunks, an empty journal, the same snapshot; and
// that it then takes commits and folds.
func TestMigrateOldSchemas(t *testing.T) {
	for _, schema := range []uint32{1, 2, 3} {
		t.Run(fmt.Sprintf("schema=%d", schema), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "store.db")
			s := openStore(t, path, Options{})
			a := newAgg(t, Config{})
			for _, ev := range mixedEvents() {
				a.Add(ev)
			}
			if err := s.Commit(a.TakeBatch(), nil); err != nil {
				t.Fatal(err)
			}
			if schema == 3 {
				// Edges in the tree and in the journal.
				fold(t, s)
				a.Add(flow(98, web, api, flows.ProtoTCP, 9998))
				if err := s.Commit(a.TakeBatch(), nil); err != nil {
					t.Fatal(err)
				}
			}
			want, err := s.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			// Turn it into what the old schema wrote.
			if schema < 3 {
				fold(t, s)
			}
			err = s.db.Update(func(tx *bolt.Tx) error {
				if err := plainTree(t, tx); err != nil {
					return err
				}
				if schema == 3 {
					if err := fullKeyJournal(tx); err != nil {
						return err
					}
					return putSchema(tx.Bucket(bucketMeta), schema)
				}
				if err := tx.DeleteBucket(bucketJournal); err != nil {
					return err
				}
				if err := tx.Bucket(bucketMeta).Delete(keyJournal); err != nil {
					return err
				}
				if schema == 1 {
					b := tx.Bucket(bucketEdges)
					var keys, vals [][]byte
					if err := b.ForEach(func(k, v []byte) error {
						e, err := decodeEdge(v)
						if err != nil {
							return err
						}
						j, err := encodeEdgeJSON(&e)
						keys, vals = append(keys, append([]byte(nil), k...)), append(vals, j)
						return err
					}); err != nil {
						return err
					}
					for i := range keys {
						if err := b.Put(keys[i], vals[i]); err != nil {
							return err
						}
					}
				}
				return putSchema(tx.Bucket(bucketMeta), schema)
			})
			if err != nil {
				t.Fatal(err)
			}
			closeChecked(t, s)

			if _, err := Open(path, Options{ReadOnly: true}); !errors.Is(err, ErrSchema) {
				t.Errorf("Open(schema %d, read-only) = %v, want ErrSchema", schema, err)
			}
			s = openStore(t, path, Options{})
			got, err := s.Snapshot()
			if err != nil {
				t.Fatalf("snapshot after migration: %v", err)
			}
			if d := cmp.Diff(want, got, snapshotOpts); d != "" {
				t.Errorf("snapshot after migration (-before +after):\n%s", d)
			}
			s.db.View(func(tx *bolt.Tx) error {
				if v := tx.Bucket(bucketMeta).Get(keySchema); binary.BigEndian.Uint32(v) != schemaVersion {
					t.Errorf("schema after migration = %v, want %d", v, schemaVersion)
				}
				if k, _ := tx.Bucket(bucketJournal).Cursor().First(); k != nil {
					t.Errorf("journal after migration holds %q, want it empty", k)
				}
				if r, err := readJournalRecord(tx.Bucket(bucketMeta)); err != nil || r.Tree != want.EdgeCount() {
					t.Errorf("journal record after migration = %+v, %v; want %d edges in the tree", r, err, want.EdgeCount())
				}
				tx.Bucket(bucketEdges).ForEach(func(k, v []byte) error {
					if v[0] != journalFormat {
						t.Errorf("edge tree key %q after migration holds format %d, want chunks (%d)", k, v[0], journalFormat)
					}
					return nil
				})
				for _, kv := range treeEdges(t, tx) {
					if kv[1][0] != edgeFormat {
						t.Errorf("edge %q after migration starts with %q, want the binary format", kv[0], kv[1][0])
					}
				}
				return nil
			})
			// The migrated store takes commits on top of what it held.
			a = newAgg(t, Config{})
			if _, err := s.Load(a); err != nil {
				t.Fatal(err)
			}
			a.Add(flow(99, web, api, flows.ProtoTCP, 9999))
			if err := s.Commit(a.TakeBatch(), nil); err != nil {
				t.Fatal(err)
			}
			after, err := s.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(a.Snapshot(), after, snapshotOpts); d != "" {
				t.Errorf("snapshot after a commit to the migrated store (-aggregator +store):\n%s", d)
			}
			// A fold merges both chunk formats into the tree.
			fold(t, s)
			if after, err = s.Snapshot(); err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(a.Snapshot(), after, snapshotOpts); d != "" {
				t.Errorf("snapshot after a fold of the migrated store (-aggregator +store):\n%s", d)
			}
		})
	}
}

// plainTree rewrites the edge tree as schemas 1 to 3 held it: one bbolt key per edge.
func plainTree(t testing.TB, tx *bolt.Tx) error {
	return replaceBucket(tx, bucketEdges, treeEdges(t, tx))
}

// replaceBucket replaces bucket name with one holding kvs (key, value pairs).
func replaceBucket(tx *bolt.Tx, name []byte, kvs [][2][]byte) error {
	if err := tx.DeleteBucket(name); err != nil {
		return err
	}
	b, err := tx.CreateBucket(name)
	if err != nil {
		return err
	}
	for _, kv := range kvs {
		if err := b.Put(kv[0], kv[1]); err != nil {
			return err
		}
	}
	return nil
}

// fullKeyJournal rewrites the journal as schema 3 wrote it: one chunk per batch, in
// journalFormatFull (whole keys).
func fullKeyJournal(tx *bolt.Tx) error {
	srcs, err := journalSources(tx.Bucket(bucketJournal), nil)
	if err != nil {
		return err
	}
	var kvs [][2][]byte
	for _, s := range srcs {
		v := []byte{journalFormatFull, 0, 0, 0, 0}
		var last []byte
		for ok := true; ok; ok = s.next() {
			v = binary.AppendUvarint(v, uint64(len(s.key)))
			v = append(v, s.key...)
			v = binary.AppendUvarint(v, uint64(len(s.val)))
			v = append(v, s.val...)
			last = append(last[:0], s.key...)
		}
		if s.err != nil {
			return s.err
		}
		binary.BigEndian.PutUint32(v[1:5], crc32.Checksum(v[5:], castagnoli))
		kvs = append(kvs, [2][]byte{append(slices.Clone(s.seq[:]), last...), v})
	}
	return replaceBucket(tx, bucketJournal, kvs)
}

// FuzzDecodeEdge feeds arbitrary bytes to the edge decoder, which reads them from the file:
// it may refuse them but must not panic, and what it accepts encodes to a value that decodes
// to the same edge.
func FuzzDecodeEdge(f *testing.F) {
	for _, e := range codecEdges() {
		f.Add(appendEdge(nil, &e))
	}
	f.Add([]byte{edgeFormat, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, v []byte) {
		e, err := decodeEdge(v)
		if err != nil {
			return
		}
		again, err := decodeEdge(appendEdge(nil, &e))
		if err != nil {
			t.Fatalf("decodeEdge(appendEdge(decodeEdge(%x))) = %v", v, err)
		}
		if d := cmp.Diff(e, again, cmpopts.EquateEmpty()); d != "" {
			t.Errorf("edge changed through encoding (-decoded +again):\n%s", d)
		}
	})
}

// Ensure that a batch's edges go to bbolt in key order, whatever prefixes the keys share and
// however long they are.
func TestEncodedEdgesSorted(t *testing.T) {
	for _, keys := range [][]string{
		{},
		{"a"},
		{"shop/app=b\x00x", "shop/app=a\x00y", "shop/app=a", "shop/app=a\x00y\x00", "shop/app=a\x00x", "shop/app=a\x00x"},
		{"x/0123456789abcdef1", "x/0123456789abcdef0", "x/0123456789abcdee", "x/0123456789abcdef", "y"},
		{"", "\x00", "\x00\x00", "\x01"},
		// Runs longer than smallRun go through the radix passes.
		randomKeys(3000, "ns/app=", 24),
		randomKeys(500, "", 10),
		randomKeys(200, "a-long-prefix-all-keys-share/k8s:app=", 3),
	} {
		var x encodedEdges
		for _, k := range keys {
			x.keys = append(x.keys, k...)
			x.keyEnd = append(x.keyEnd, len(x.keys))
			x.valEnd = append(x.valEnd, 0)
		}
		var got []string
		var scratch []rankedKey
		for _, r := range x.sorted(&scratch) {
			got = append(got, string(x.key(int(r.i))))
		}
		want := slices.Clone(keys)
		slices.Sort(want)
		if !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
			t.Errorf("sorted(%q) = %q, want %q", keys, got, want)
		}
	}
}

// randomKeys returns n keys of prefix and up to maxLen random bytes from a small alphabet
// (zero bytes, repeats, keys that are prefixes of others), some repeated: a batch's keys are
// unique, but equal keys must not upset the order either.
func randomKeys(n int, prefix string, maxLen int) []string {
	rng := rand.New(rand.NewPCG(uint64(n), uint64(maxLen)))
	alphabet := []byte{0, 1, 'a', 'b', 0xff}
	keys := make([]string, 0, n)
	for range n {
		if len(keys) > 0 && rng.IntN(10) == 0 {
			keys = append(keys, keys[rng.IntN(len(keys))])
			continue
		}
		k := []byte(prefix)
		for range rng.IntN(maxLen + 1) {
			k = append(k, alphabet[rng.IntN(len(alphabet))])
		}
		keys = append(keys, string(k))
	}
	return keys
}

// BenchmarkEncodedEdgesSorted measures the sort of one batch's edge keys in the shape of the
// 1M-edge case of BenchmarkScaleEdges: 200k flows of a million-edge stream, so about 400k keys
// of 1,500 workloads (issue 19.2: the sort was most of the journal's append there).
func BenchmarkEncodedEdgesSorted(b *testing.B) {
	a := newAgg(b, Config{MaxEdges: 2_000_000})
	gen := newSynthetic(1000, 500, 0)
	for i := range 200_000 {
		a.Add(gen.event(300_000 + i))
	}
	batch := a.TakeBatch()
	batch.encode()
	batch.edges.ordered = false // keys in no known order: TakeBatch's order spares the store this sort
	b.ReportAllocs()
	var scratch []rankedKey
	for b.Loop() {
		batch.edges.sorted(&scratch)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(batch.edges.len()), "ns/key")
}
