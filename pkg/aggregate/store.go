package aggregate

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/bits"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/recommender/recommender/pkg/flows"
)

// Errors returned by Open. Each is wrapped with the store's path and a hint.
var (
	// ErrLocked is returned when another process holds the store open for writing past
	// Options.Timeout.
	ErrLocked = errors.New("locked by another process")
	// ErrNotStore is returned for a bbolt file that recommender did not write (no meta bucket
	// or a foreign format marker), and for an empty file opened read-only.
	ErrNotStore = errors.New("not a recommender store")
	// ErrCorrupt is returned when bbolt cannot read the file: it is not a bbolt file, or its
	// meta pages are damaged (bbolt's ErrInvalid, ErrChecksum, ErrVersionMismatch).
	ErrCorrupt = errors.New("not a bbolt file or corrupt")
	// ErrSchema is returned for a store written by a newer schema version, or an older one
	// opened read-only (migration needs a write).
	ErrSchema = errors.New("unsupported store schema")
	// ErrFailed is returned by writes to a store that failed an integrity check after it was
	// opened (a read found a damaged page): nothing more is written to it.
	ErrFailed = errors.New("store failed an integrity check")
)

// corruptHint is the fix every command prints for a damaged store.
const corruptHint = "it was left as it is: restore it from a backup, or move it away to start a new store"

// DefaultLockTimeout is how long Open waits for another process to release the file.
const DefaultLockTimeout = time.Second

// Options configure Open.
type Options struct {
	// Timeout bounds the wait for the file lock; zero means DefaultLockTimeout. bbolt without
	// a timeout would wait forever.
	Timeout time.Duration
	// ReadOnly opens with a shared lock and never writes (status, synthesis from a store).
	ReadOnly bool
	// NoSync skips fsync on commit. Unsafe: only benchmarks set it.
	NoSync bool
	// Logger receives state changes (open, migrations, compaction); nil discards.
	Logger *slog.Logger
	// Registerer registers the store metrics; nil leaves them unregistered.
	Registerer prometheus.Registerer
}

// Store is the bbolt file holding the aggregated edges, the ingest cursor and lifecycle state.
// It owns the only *bbolt.DB. Its methods are safe for concurrent use; bbolt allows one write
// transaction at a time and read transactions alongside it.
type Store struct {
	db      *bolt.DB
	path    string
	log     *slog.Logger
	metrics *storeMetrics
	// failed is set once a read found the file damaged; Commit then refuses (ErrFailed).
	failed atomic.Bool
	// scratch is what commits encode journal chunks into and sort a batch's keys with,
	// reused from one commit to the next (bbolt holds the values it is given only until the
	// transaction ends, and there is one write transaction at a time): a new chunk buffer per
	// commit was a tenth of what an ingest over 1M edges allocated, the sort's a thirtieth,
	// and garbage makes the collector mark the edges again. scratchMu guards it.
	scratchMu sync.Mutex
	scratch   commitScratch
}

// commitScratch is the memory a commit reuses: blocks for the journal's chunks
// (appendJournal), ranks for the sort of the batch's keys (encodedEdges.sorted).
type commitScratch struct {
	blocks [][]byte
	ranks  []rankedKey
}

// migration upgrades a store from schema version from to from+1 inside one write transaction.
type migration func(tx *bolt.Tx) error

// migrations[i] upgrades schema i+1 to i+2.
var migrations = []migration{binaryEdges, createJournal, edgeBlocks}

// binaryEdges upgrades schema 1 to 2: every edge value is rewritten from JSON into the binary
// encoding (appendEdge). Keys do not change. bbolt must not be written while ForEach walks
// it, so the new values are collected first; a store at the default caps holds at most
// 250,000 edges, a few tens of MiB.
func binaryEdges(tx *bolt.Tx) error {
	b := tx.Bucket(bucketEdges)
	b.FillPercent = edgesFill
	var keys, vals [][]byte
	err := b.ForEach(func(k, v []byte) error {
		e, err := decodeEdgeJSON(v)
		if err != nil {
			return fmt.Errorf("edge %q: %w", k, err)
		}
		keys = append(keys, bytes.Clone(k))
		vals = append(vals, appendEdge(nil, &e))
		return nil
	})
	if err != nil {
		return err
	}
	for i, k := range keys {
		if err := b.Put(k, vals[i]); err != nil {
			return fmt.Errorf("put edge %q: %w", k, err)
		}
	}
	return nil
}

// Open opens the store at path, creating it when the file does not exist (unless ReadOnly).
// An existing file is checked read-only first (checkIntegrity, then the schema): a file that is
// locked, empty, damaged, foreign or from a newer schema is reported and left byte-for-byte as
// it was, by read-only and read-write opens alike.
func Open(path string, opts Options) (*Store, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultLockTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Store{path: path, log: opts.Logger, metrics: newStoreMetrics(opts.Registerer)}

	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if opts.ReadOnly {
			return nil, fmt.Errorf("open store %s: %w", path, err)
		}
	case err != nil:
		return nil, fmt.Errorf("open store %s: %w", path, err)
	case st.IsDir():
		return nil, fmt.Errorf("open store %s: is a directory", path)
	case st.Size() == 0:
		// bbolt would silently write a new store into it. An empty file is what a crash during
		// creation or a failed copy leaves; either way the operator decides (issue 15.1).
		return nil, fmt.Errorf("open store %s: %w (empty file); it was left as it is: remove it to start a new store, or restore it from a backup",
			path, ErrNotStore)
	default:
		// Check before opening for writing: bbolt may write to a file it opens read-write
		// (freelist sync), and a damaged or foreign file must stay untouched.
		var ro *bolt.DB
		err := s.guard(func() error {
			// First the size the meta page claims, before bbolt reads any other page: a
			// truncated file says so instead of failing on whatever page is read first.
			meta, err := s.openDB(bolt.Options{Timeout: opts.Timeout, ReadOnly: true})
			if err != nil {
				return err
			}
			err = meta.View(func(tx *bolt.Tx) error { return checkSize(tx, st.Size()) })
			if cerr := meta.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
			// The freelist is loaded here, under guard, rather than by tx.Check's goroutine.
			ro, err = s.openDB(bolt.Options{Timeout: opts.Timeout, ReadOnly: true, PreLoadFreelist: true})
			if err != nil {
				return err
			}
			var empty bool
			err = ro.View(func(tx *bolt.Tx) error {
				if err := checkIntegrity(tx, st.Size()); err != nil {
					return err
				}
				var cerr error
				empty, cerr = checkSchema(tx, opts.ReadOnly)
				return cerr
			})
			if err == nil && empty && opts.ReadOnly {
				err = fmt.Errorf("%w (bbolt file without data)", ErrNotStore)
			}
			return err
		})
		if err != nil {
			if ro != nil {
				ro.Close()
			}
			if errors.Is(err, ErrLocked) {
				return nil, err
			}
			return nil, fmt.Errorf("open store %s: %w", path, err)
		}
		if opts.ReadOnly {
			s.db = ro
			s.updateSize()
			return s, nil
		}
		if err := ro.Close(); err != nil {
			return nil, fmt.Errorf("open store %s: %w", path, err)
		}
	}

	err = s.guard(func() error {
		db, err := s.openDB(bolt.Options{Timeout: opts.Timeout, NoSync: opts.NoSync, PreLoadFreelist: true, InitialMmapSize: initialMmap})
		if err != nil {
			return err
		}
		s.db = db
		return db.Update(s.initOrMigrate)
	})
	if err != nil {
		if s.db != nil {
			s.db.Close()
		}
		if errors.Is(err, ErrLocked) {
			return nil, err
		}
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	s.updateSize()
	s.log.Debug("store opened", "path", path)
	return s, nil
}

// openDB opens the bbolt file and turns bbolt's errors into ours, with a recovery hint.
func (s *Store) openDB(o bolt.Options) (*bolt.DB, error) {
	db, err := bolt.Open(s.path, 0o600, &o)
	switch {
	case err == nil:
		return db, nil
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("store %s is %w (waited %s; is `recommender run` or `ingest` using it?)", s.path, ErrLocked, o.Timeout)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum), errors.Is(err, berrors.ErrVersionMismatch),
		// A file cut inside its second meta page: bbolt has no sentinel for it, and its text is
		// all that tells it from an I/O error (found by FuzzOpen).
		strings.HasPrefix(err.Error(), "file size too small"):
		return nil, fmt.Errorf("%w (%v); %s", ErrCorrupt, err, corruptHint)
	}
	return nil, err
}

// fullCheckLimit is the largest file bbolt's own consistency check (tx.Check: page references,
// freelist, key order) runs on at open. Above it Open only walks every record (checkIntegrity),
// which costs what loading the store costs anyway; bbolt's check adds a map entry per page and
// would add seconds per gigabyte to every start.
const fullCheckLimit = 256 << 20

// checkIntegrity proves the file readable before anything uses it: the pages bbolt's meta page
// claims lie inside the file (a truncated file would fault on the first read past its end),
// every key and value of every bucket can be reached, and, up to fullCheckLimit, bbolt's own
// consistency check passes. It must run under guard: on a damaged page bbolt panics or reads
// outside its map, and guard turns either into ErrCorrupt.
func checkIntegrity(tx *bolt.Tx, fileSize int64) error {
	if err := checkSize(tx, fileSize); err != nil {
		return err
	}
	var touched byte
	var walk func(b *bolt.Bucket) error
	walk = func(b *bolt.Bucket) error {
		return b.ForEach(func(k, v []byte) error {
			// Reading both ends of each slice is what faults when a damaged page points
			// outside the file; the bytes in between are contiguous.
			touched ^= k[0] ^ k[len(k)-1]
			if v == nil {
				if c := b.Bucket(k); c != nil {
					return walk(c)
				}
				return nil
			}
			if len(v) > 0 {
				touched ^= v[0] ^ v[len(v)-1]
			}
			return nil
		})
	}
	err := tx.ForEach(func(name []byte, b *bolt.Bucket) error { return walk(b) })
	if err != nil {
		return fmt.Errorf("%w (%v); %s", ErrCorrupt, err, corruptHint)
	}
	var schema uint32
	if meta := tx.Bucket(bucketMeta); meta != nil {
		if v := meta.Get(keySchema); len(v) == 4 {
			schema = binary.BigEndian.Uint32(v)
		}
	}
	if err := checkJournal(tx, schema); err != nil {
		return err
	}
	_ = touched
	if fileSize > fullCheckLimit {
		return nil
	}
	var errs []string
	for err := range tx.Check() {
		if len(errs) < 3 {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w (%s); %s", ErrCorrupt, strings.Join(errs, "; "), corruptHint)
	}
	return nil
}

// checkSize compares the file with the size its meta page claims.
func checkSize(tx *bolt.Tx, fileSize int64) error {
	if tx.Size() > fileSize {
		return fmt.Errorf("%w (truncated: the file is %d bytes, its meta page says %d); %s", ErrCorrupt, fileSize, tx.Size(), corruptHint)
	}
	return nil
}

// guard runs fn, which reads or writes the bbolt file, and turns a panic or memory fault inside
// bbolt into ErrCorrupt. bbolt's meta pages carry a checksum, its other pages do not: on a
// damaged page it panics ("assertion failed: Page expected to be ...") or follows a garbage
// offset outside its map. Faults become panics only on the goroutine that asked for it
// (debug.SetPanicOnFault), so every access to the file goes through guard on the goroutine that
// makes it. After a recovered panic the store is marked failed and never written again: bbolt
// rolled the transaction back, but the file is not to be trusted.
func (s *Store) guard(fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			s.failed.Store(true)
			err = fmt.Errorf("%w (bbolt: %v); %s", ErrCorrupt, r, corruptHint)
		}
	}()
	return fn()
}

// view runs fn in a read transaction under guard.
func (s *Store) view(fn func(*bolt.Tx) error) error {
	return s.guard(func() error { return s.db.View(fn) })
}

// update runs fn in a write transaction under guard, unless the store failed before.
func (s *Store) update(fn func(*bolt.Tx) error) error {
	if s.failed.Load() {
		return fmt.Errorf("%w earlier; nothing more is written to it: %s", ErrFailed, corruptHint)
	}
	return s.guard(func() error { return s.db.Update(fn) })
}

// checkSchema verifies that tx belongs to one of our stores of a schema this code reads. It
// reports empty for a bbolt file without any bucket: a store whose creation was interrupted
// before its first commit, which Open completes.
func checkSchema(tx *bolt.Tx, readOnly bool) (empty bool, err error) {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		var names []string
		tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
			names = append(names, string(name))
			return nil
		})
		if len(names) == 0 {
			return true, nil
		}
		return false, fmt.Errorf("%w: no %q bucket (found %s); it was left as it is: give --db a new path",
			ErrNotStore, bucketMeta, strings.Join(names, ", "))
	}
	if f := meta.Get(keyFormat); string(f) != formatID {
		return false, fmt.Errorf("%w: format %q, want %q; it was left as it is: give --db a new path", ErrNotStore, f, formatID)
	}
	v := meta.Get(keySchema)
	if len(v) != 4 {
		return false, fmt.Errorf("%w: schema version missing", ErrNotStore)
	}
	got := binary.BigEndian.Uint32(v)
	switch {
	case got > schemaVersion:
		return false, fmt.Errorf("%w: found %d, want %d or older; it was written by a newer recommender: use that version", ErrSchema, got, schemaVersion)
	case got < schemaVersion && readOnly:
		return false, fmt.Errorf("%w: found %d, want %d; open it once for writing (ingest or run) to migrate it", ErrSchema, got, schemaVersion)
	case got == 0:
		return false, fmt.Errorf("%w: schema version 0", ErrSchema)
	}
	return false, nil
}

// initOrMigrate creates the buckets of a new store, or brings an older schema up to date.
func (s *Store) initOrMigrate(tx *bolt.Tx) error {
	empty, err := checkSchema(tx, false)
	if err != nil {
		return err
	}
	if empty {
		for _, b := range allBuckets {
			if _, err := tx.CreateBucket(b); err != nil {
				return fmt.Errorf("create bucket %s: %w", b, err)
			}
		}
		meta := tx.Bucket(bucketMeta)
		if err := putSchema(meta, schemaVersion); err != nil {
			return err
		}
		if err := meta.Put(keyFormat, []byte(formatID)); err != nil {
			return err
		}
		// Nanoseconds: the time also tells this store from one created later at the same path
		// (Identity).
		return meta.Put(keyCreated, []byte(time.Now().UTC().Format(time.RFC3339Nano)))
	}
	from := binary.BigEndian.Uint32(tx.Bucket(bucketMeta).Get(keySchema))
	return migrate(tx, from, schemaVersion, migrations, s.log)
}

func putSchema(meta *bolt.Bucket, v uint32) error {
	return meta.Put(keySchema, binary.BigEndian.AppendUint32(nil, v))
}

// migrate runs steps[from-1 .. to-2] in order and records the new version, all in tx: a crash
// during migration leaves the old schema intact.
func migrate(tx *bolt.Tx, from, to uint32, steps []migration, log *slog.Logger) error {
	for v := from; v < to; v++ {
		if int(v) > len(steps) {
			return fmt.Errorf("%w: no migration from schema %d", ErrSchema, v)
		}
		if err := steps[v-1](tx); err != nil {
			return fmt.Errorf("migrate schema %d to %d: %w", v, v+1, err)
		}
		if err := putSchema(tx.Bucket(bucketMeta), v+1); err != nil {
			return err
		}
		log.Info("store schema migrated", "from", v, "to", v+1)
	}
	return nil
}

// Path returns the file the store was opened from.
func (s *Store) Path() string { return s.path }

// Close closes the file.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close store %s: %w", s.path, err)
	}
	return nil
}

// Check runs bbolt's consistency check over the whole file.
func (s *Store) Check() error {
	return s.view(func(tx *bolt.Tx) error {
		var errs []error
		for err := range tx.Check() {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	})
}

// Lifecycle is write access to the lifecycle bucket inside a commit: values written through
// it are committed atomically with the batch. The values are opaque here; their owner (the
// audit lifecycle) versions its own encoding.
type Lifecycle struct {
	b *bolt.Bucket
}

// Put stores a value for a workload.
func (l *Lifecycle) Put(workload string, v []byte) error {
	if err := l.b.Put([]byte(workload), v); err != nil {
		return fmt.Errorf("put lifecycle %s: %w", workload, err)
	}
	return nil
}

// Delete removes a workload's value.
func (l *Lifecycle) Delete(workload string) error { return l.b.Delete([]byte(workload)) }

// Commit writes b in one write transaction, fsynced before it returns: the edges, workloads,
// DNS answers, lost counts and totals, the cursor (when b.Cursor is set), and what hook writes
// through the Lifecycle (when hook is not nil). Either all of it is on disk or none of it.
func (s *Store) Commit(b *Batch, hook func(*Lifecycle) error) error {
	start := time.Now()
	b.encode()
	var size int64
	err := s.update(func(tx *bolt.Tx) error {
		if err := s.writeBatch(tx, b); err != nil {
			return err
		}
		if hook != nil {
			if err := hook(&Lifecycle{b: tx.Bucket(bucketLifecycle)}); err != nil {
				return fmt.Errorf("lifecycle hook: %w", err)
			}
		}
		size = tx.Size()
		return nil
	})
	if err != nil {
		return fmt.Errorf("commit to store %s: %w", s.path, err)
	}
	s.metrics.commitDuration.Observe(time.Since(start).Seconds())
	s.metrics.commits.Inc()
	s.metrics.sizeBytes.Set(float64(size))
	s.metrics.edges.Set(float64(b.EdgeCount))
	s.metrics.workloads.Set(float64(b.WorkloadCount))
	return nil
}

func (s *Store) writeBatch(tx *bolt.Tx, b *Batch) error {
	wls := tx.Bucket(bucketWorkloads)
	dns, lost, meta := tx.Bucket(bucketDNS), tx.Bucket(bucketLost), tx.Bucket(bucketMeta)
	s.scratchMu.Lock()
	err := writeEdges(tx, b, &s.scratch)
	s.scratchMu.Unlock()
	if err != nil {
		return err
	}
	for _, k := range b.DeletedWorkloads {
		if err := wls.Delete([]byte(k)); err != nil {
			return fmt.Errorf("delete workload %s: %w", k, err)
		}
	}
	for _, ip := range b.DeletedDNS {
		if err := dns.Delete([]byte(ip)); err != nil {
			return fmt.Errorf("delete dns %s: %w", ip, err)
		}
	}
	for i := range b.Workloads {
		w := &b.Workloads[i]
		v, err := encodeWorkload(w)
		if err != nil {
			return err
		}
		if err := wls.Put([]byte(w.Key.String()), v); err != nil {
			return fmt.Errorf("put workload %s: %w", w.Key, err)
		}
	}
	for ip, a := range b.DNS {
		v, err := json.Marshal(dnsRecord{Names: a.Names, Last: nanos(a.LastSeen)})
		if err != nil {
			return err
		}
		if err := dns.Put([]byte(ip), v); err != nil {
			return fmt.Errorf("put dns %s: %w", ip, err)
		}
	}
	for _, l := range b.Lost {
		v, err := json.Marshal(lostRecord{Lost: l.Lost, Last: nanos(l.Last)})
		if err != nil {
			return err
		}
		if err := lost.Put([]byte(l.Node), v); err != nil {
			return fmt.Errorf("put lost %s: %w", l.Node, err)
		}
	}
	v, err := json.Marshal(totalsRecord{Flows: b.Flows, Overflow: b.Overflow, Rejected: b.Rejected, From: nanos(b.From), To: nanos(b.To)})
	if err != nil {
		return err
	}
	if err := meta.Put(keyTotals, v); err != nil {
		return fmt.Errorf("put totals: %w", err)
	}
	if b.Churning != nil {
		recs := make([]churnRecord, len(b.Churning))
		for i, l := range b.Churning {
			recs[i] = churnRecord(l)
		}
		v, err := json.Marshal(recs)
		if err != nil {
			return err
		}
		if err := meta.Put(keyChurn, v); err != nil {
			return fmt.Errorf("put churning labels: %w", err)
		}
	}
	if b.Files != nil {
		recs := make([]fileMarkRecord, len(b.Files))
		for i, m := range b.Files {
			recs[i] = fileMarkRecord{Path: m.Path, Offset: m.Offset, Line: m.Line, Head: m.Head, Tail: m.Tail, Time: nanos(m.Time)}
		}
		v, err := json.Marshal(recs)
		if err != nil {
			return err
		}
		if err := meta.Put(keyFiles, v); err != nil {
			return fmt.Errorf("put file marks: %w", err)
		}
	}
	if b.Cursor != nil {
		c, err := b.Cursor.MarshalBinary()
		if err != nil {
			return fmt.Errorf("encode cursor: %w", err)
		}
		if err := meta.Put(keyCursor, c); err != nil {
			return fmt.Errorf("put cursor: %w", err)
		}
	}
	return nil
}

// edgesFill is how full bbolt packs the edge pages it splits (Bucket.FillPercent, set per
// transaction; bbolt's default is half) in a tree of one key per edge, which only the
// migration from schema 1 writes now (schema 4 writes the tree as chunks). New edges of one workload arrive in bursts and land
// next to each other, and stored values only grow by a few bytes (their varint counts), so
// half-empty pages were mostly never filled: 0.9 leaves room for that growth and cut the file
// from 1.0 to 0.6 KiB per edge at 100k edges and from 0.56 to 0.33 KiB at 1M (issue 19.2).
const edgesFill = 0.9

// sorted returns the edges ranked in key order (rankedKey.i is the index of each), in
// *scratch, which it grows when it must. The keys of a batch share long
// prefixes (the namespace and labels of a workload, then of its peer), which made
// bytes.Compare the cost of a comparison sort: 9% of an ingest's CPU over 100k edges, and
// still 0.8 s of 1M flows over 1M edges with only keys equal in their first eight bytes after
// the shared prefix compared (issue 19.2). So keys are radix-sorted eight bytes at a time
// (sortKeys), each run of keys equal so far again from the next bytes they do not all share.
func (x *encodedEdges) sorted(scratch *[]rankedKey) []rankedKey {
	n := x.len()
	if n == 0 {
		return nil
	}
	if cap(*scratch) < 2*n {
		*scratch = make([]rankedKey, 2*n)
	}
	rs := (*scratch)[:2*n]
	for i := range n {
		rs[i].i = uint32(i)
	}
	if x.ordered {
		return rs[:n] // TakeBatch encoded them in key order (Aggregator.batchOrder)
	}
	x.sortKeys(rs[:n], rs[n:], 0)
	return rs[:n]
}

// rankedKey is edge i's key ranked by eight of its bytes from some offset.
type rankedKey struct {
	// word is the eight bytes, big-endian and zero-padded past the key's end.
	word uint64
	// rest is how many of the key's bytes remain from the offset, at most 9 (more than the
	// word holds). Among keys of equal words, one that ends within the word is a prefix of the
	// others: fewer bytes sort first.
	rest uint8
	i    uint32
}

// smallRun is the run length below which a comparison sort beats the radix passes.
const smallRun = 64

// sortKeys sorts rs by their keys' bytes from off on; the bytes before off are equal. tmp is
// scratch of rs's length.
func (x *encodedEdges) sortKeys(rs, tmp []rankedKey, off int) {
	for len(rs) > 1 {
		// Skip the bytes every key of the run shares: at each level, the rest of a workload's
		// labels or of a peer's.
		first := x.key(int(rs[0].i))
		common := len(first) - off
		for _, r := range rs[1:] {
			if common == 0 {
				break
			}
			k := x.key(int(r.i))
			common = min(common, len(k)-off)
			common = commonPrefix(first[off:off+common], k[off:off+common])
		}
		off += common
		for j := range rs {
			k := x.key(int(rs[j].i))[off:]
			var w [8]byte
			copy(w[:], k)
			rs[j].word, rs[j].rest = binary.BigEndian.Uint64(w[:]), uint8(min(len(k), 9))
		}
		if len(rs) < smallRun {
			slices.SortFunc(rs, func(a, b rankedKey) int {
				return cmp.Or(cmp.Compare(a.word, b.word), cmp.Compare(a.rest, b.rest))
			})
		} else {
			radixSort(rs, tmp[:len(rs)])
		}
		// Runs of keys equal so far that go on past the word are sorted from the next word.
		// The longest run is left to the loop, so that nesting stays shallow.
		var longest, longestTmp []rankedKey
		for start := 0; start < len(rs); {
			end := start + 1
			for end < len(rs) && rs[end].word == rs[start].word && rs[end].rest == rs[start].rest {
				end++
			}
			if run, runTmp := rs[start:end], tmp[start:end]; len(run) > 1 && run[0].rest > 8 {
				if len(run) > len(longest) {
					run, longest = longest, run
					runTmp, longestTmp = longestTmp, runTmp
				}
				if len(run) > 1 {
					x.sortKeys(run, runTmp, off+8)
				}
			}
			start = end
		}
		rs, tmp, off = longest, longestTmp, off+8
	}
}

// radixSort sorts rs by word, then rest: a stable counting pass per byte, least significant
// first, skipping the bytes all of them share. tmp is scratch of rs's length.
func radixSort(rs, tmp []rankedKey) {
	var counts [9][256]int
	for _, r := range rs {
		counts[0][r.rest]++
		for b := range 8 {
			counts[b+1][byte(r.word>>(8*b))]++
		}
	}
	src, dst := rs, tmp
	for pass := range 9 {
		c := &counts[pass]
		digit := func(r *rankedKey) byte {
			if pass == 0 {
				return r.rest
			}
			return byte(r.word >> (8 * (pass - 1)))
		}
		if c[digit(&src[0])] == len(src) {
			continue // every key has this byte
		}
		pos := 0
		for d := range c {
			c[d], pos = pos, pos+c[d]
		}
		for j := range src {
			d := digit(&src[j])
			dst[c[d]] = src[j]
			c[d]++
		}
		src, dst = dst, src
	}
	if &src[0] != &rs[0] {
		copy(rs, src)
	}
}

// commonPrefix returns the length of the prefix a and b share; len(a) <= len(b).
func commonPrefix(a, b []byte) int {
	i := 0
	for ; i+8 <= len(a); i += 8 {
		if d := binary.LittleEndian.Uint64(a[i:]) ^ binary.LittleEndian.Uint64(b[i:]); d != 0 {
			return i + bits.TrailingZeros64(d)/8
		}
	}
	for i < len(a) && a[i] == b[i] {
		i++
	}
	return i
}

// dropScratch lets go of the memory commits reuse.
func (s *Store) dropScratch() {
	s.scratchMu.Lock()
	defer s.scratchMu.Unlock()
	s.scratch = commitScratch{}
}

// Cursor returns the ingest cursor committed with the last batch (empty for a new store).
func (s *Store) Cursor() (*flows.Cursor, error) {
	c := flows.NewCursor()
	err := s.view(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keyCursor); v != nil {
			return c.UnmarshalBinary(v)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read cursor from store %s: %w", s.path, err)
	}
	return c, nil
}

// FileMarks returns how far the last ingest read each plain input file (empty for a new store).
func (s *Store) FileMarks() ([]flows.FileMark, error) {
	var marks []flows.FileMark
	err := s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketMeta).Get(keyFiles)
		if v == nil {
			return nil
		}
		var recs []fileMarkRecord
		if err := json.Unmarshal(v, &recs); err != nil {
			return fmt.Errorf("decode file marks: %w", err)
		}
		for _, r := range recs {
			marks = append(marks, flows.FileMark{FilePos: flows.FilePos{Path: r.Path, Offset: r.Offset, Line: r.Line},
				Head: r.Head, Tail: r.Tail, Time: fromNanos(r.Time)})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read file marks from store %s: %w", s.path, err)
	}
	return marks, nil
}

// Snapshot reads the whole store in one read transaction: a consistent view even while
// batches are committed. Workloads are sorted by key, each workload's edges by EdgeKey.
func (s *Store) Snapshot() (*Snapshot, error) {
	snap := &Snapshot{Edges: make(map[string][]Edge), DNS: make(map[string][]string), dnsLast: make(map[string]time.Time)}
	err := s.view(func(tx *bolt.Tx) error {
		var t totalsRecord
		if v := tx.Bucket(bucketMeta).Get(keyTotals); v != nil {
			if err := json.Unmarshal(v, &t); err != nil {
				return fmt.Errorf("decode totals: %w", err)
			}
		}
		snap.Flows, snap.Overflow, snap.Rejected, snap.From, snap.To = t.Flows, t.Overflow, t.Rejected, fromNanos(t.From), fromNanos(t.To)
		if v := tx.Bucket(bucketMeta).Get(keyChurn); v != nil {
			var recs []churnRecord
			if err := json.Unmarshal(v, &recs); err != nil {
				return fmt.Errorf("decode churning labels: %w", err)
			}
			for _, r := range recs {
				snap.Churning = append(snap.Churning, ChurningLabel(r))
			}
		}
		err := tx.Bucket(bucketWorkloads).ForEach(func(k, v []byte) error {
			w, err := decodeWorkload(v)
			if err != nil {
				return fmt.Errorf("workload %s: %w", k, err)
			}
			snap.Workloads = append(snap.Workloads, w)
			return nil
		})
		if err != nil {
			return err
		}
		err = forEachEdge(tx, nil, func(k, v []byte) error {
			e, err := decodeEdge(v)
			if err != nil {
				return fmt.Errorf("edge %q: %w", k, err)
			}
			key := string(k[:bytes.IndexByte(k, 0)])
			snap.Edges[key] = append(snap.Edges[key], e)
			return nil
		})
		if err != nil {
			return err
		}
		err = tx.Bucket(bucketDNS).ForEach(func(k, v []byte) error {
			var r dnsRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("dns %s: %w", k, err)
			}
			snap.DNS[string(k)] = r.Names
			snap.dnsLast[string(k)] = fromNanos(r.Last)
			return nil
		})
		if err != nil {
			return err
		}
		return tx.Bucket(bucketLost).ForEach(func(k, v []byte) error {
			var r lostRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("lost %s: %w", k, err)
			}
			snap.Lost = append(snap.Lost, NodeLost{Node: string(k), Lost: r.Lost, Last: fromNanos(r.Last)})
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("read store %s: %w", s.path, err)
	}
	// Keys are already in order; edges of one workload come out sorted as compareEdgeKeys says.
	return snap, nil
}

// Workload returns one workload and its edges (a prefix scan of the edges bucket).
func (s *Store) Workload(key string) (*Workload, []Edge, bool, error) {
	var w *Workload
	var edges []Edge
	err := s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketWorkloads).Get([]byte(key))
		if v == nil {
			return nil
		}
		wl, err := decodeWorkload(v)
		if err != nil {
			return err
		}
		w = &wl
		return forEachEdge(tx, workloadPrefix(key), func(k, v []byte) error {
			e, err := decodeEdge(v)
			if err != nil {
				return fmt.Errorf("edge %q: %w", k, err)
			}
			edges = append(edges, e)
			return nil
		})
	})
	if err != nil {
		return nil, nil, false, fmt.Errorf("read workload %s from store %s: %w", key, s.path, err)
	}
	return w, edges, w != nil, nil
}

// Identity tells this store from another one at the same path, such as one that replaced it
// after a volume was lost: the time it was created. A copy of the file (a backup restored)
// has the identity of the store it copies.
func (s *Store) Identity() (string, error) {
	var id string
	err := s.view(func(tx *bolt.Tx) error {
		id = string(tx.Bucket(bucketMeta).Get(keyCreated))
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("read identity of store %s: %w", s.path, err)
	}
	return id, nil
}

// Lifecycle returns a copy of the lifecycle value of a workload, or nil.
func (s *Store) Lifecycle(workload string) ([]byte, error) {
	var v []byte
	err := s.view(func(tx *bolt.Tx) error {
		v = bytes.Clone(tx.Bucket(bucketLifecycle).Get([]byte(workload)))
		return nil
	})
	return v, err
}

// Lifecycles returns a copy of every value in the lifecycle bucket, by key.
func (s *Store) Lifecycles() (map[string][]byte, error) {
	out := make(map[string][]byte)
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketLifecycle).ForEach(func(k, v []byte) error {
			out[string(k)] = bytes.Clone(v)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("read lifecycle from store %s: %w", s.path, err)
	}
	return out, nil
}

// Load fills an empty Aggregator with the stored state and returns the stored cursor: the
// starting point of an ingest that continues this store.
func (s *Store) Load(a *Aggregator) (*flows.Cursor, error) {
	snap, err := s.Snapshot()
	if err != nil {
		return nil, err
	}
	if w, e := a.Len(); w != 0 || e != 0 {
		return nil, errors.New("load store: aggregator is not empty")
	}
	a.restore(snap)
	return s.Cursor()
}

// Expire removes, in one commit, the edges last seen before cutoff and what Aggregator.Expire
// removes with them. It is for a store no ingest is writing to (an ingest expires through its
// own Aggregator, see IngesterConfig.Retention). It returns the number of edges removed.
func (s *Store) Expire(cutoff time.Time) (int, error) {
	a, err := NewAggregator(Config{MaxEdges: maxInt, MaxWorkloads: maxInt}, s.log, nil)
	if err != nil {
		return 0, err
	}
	if _, err := s.Load(a); err != nil {
		return 0, err
	}
	n := a.Expire(cutoff)
	if err := s.Commit(a.TakeBatch(), nil); err != nil {
		return 0, err
	}
	s.metrics.expired.Add(float64(n))
	return n, nil
}

const maxInt = int(^uint(0) >> 1)

// copyLive writes the records of src into the empty dst, packed, in transactions of at most
// 64 MiB (memory stays bounded on big stores). The edges are written merged with the journal
// (forEachEdge), so dst's journal starts empty.
func copyLive(dst, src *bolt.DB) error {
	const txMax = 64 << 20
	return src.View(func(stx *bolt.Tx) error {
		tx, err := dst.Begin(true)
		if err != nil {
			return err
		}
		defer func() { tx.Rollback() }()
		size := 0
		put := func(bucket []byte, fill float64, k, v []byte) error {
			if size > txMax {
				if err := tx.Commit(); err != nil {
					return err
				}
				if tx, err = dst.Begin(true); err != nil {
					return err
				}
				size = 0
			}
			size += len(k) + len(v)
			b := tx.Bucket(bucket)
			b.FillPercent = fill
			return b.Put(k, v)
		}
		err = stx.ForEach(func(name []byte, _ *bolt.Bucket) error {
			_, err := tx.CreateBucket(name)
			return err
		})
		if err != nil {
			return err
		}
		err = stx.ForEach(func(name []byte, b *bolt.Bucket) error {
			if bytes.Equal(name, bucketEdges) || bytes.Equal(name, bucketJournal) {
				return nil
			}
			return b.ForEach(func(k, v []byte) error {
				if v == nil {
					return fmt.Errorf("bucket %s: unexpected nested bucket %q", name, k)
				}
				return put(name, 1, k, v)
			})
		})
		if err != nil {
			return err
		}
		// The edges as the tree's chunks, each in a buffer of its own: put may commit and go
		// on in a new transaction, and bbolt holds the values until then.
		w := chunkWriter{
			alloc: func() []byte { return make([]byte, 0, journalBlock) },
			put:   func(k, v []byte) error { return put(bucketEdges, 1, k, v) },
		}
		n := 0
		err = forEachEdge(stx, nil, func(k, v []byte) error {
			n++
			return w.add(k, v)
		})
		if err == nil {
			err = w.flush()
		}
		if err != nil {
			return err
		}
		if err := putJournalRecord(tx.Bucket(bucketMeta), journalRecord{Tree: n}); err != nil {
			return err
		}
		return tx.Commit()
	})
}

func (s *Store) updateSize() {
	if st, err := os.Stat(s.path); err == nil {
		s.metrics.sizeBytes.Set(float64(st.Size()))
	}
}

// Compact copies the store at src into a new, compact file. bbolt never returns freed pages to
// the file system: after retention expired many edges the file keeps its peak size, with the
// free pages reused by later writes. Compact writes only live data. With dst empty it replaces
// src (written next to it, fsynced, then renamed over it, so a crash leaves either the old or
// the new file); otherwise dst must not exist. No other process may write src meanwhile: Open
// refuses while one holds the lock, and one starting during the copy would lose its writes.
func Compact(src, dst string, opts Options) (before, after int64, err error) {
	opts.ReadOnly = true
	in, err := Open(src, opts)
	if err != nil {
		return 0, 0, err
	}
	defer func() { err = errors.Join(err, in.Close()) }()
	inPlace := dst == ""
	if inPlace {
		f, err := os.CreateTemp(filepath.Dir(src), filepath.Base(src)+".compact-*")
		if err != nil {
			return 0, 0, fmt.Errorf("compact %s: %w", src, err)
		}
		dst = f.Name()
		f.Close()
		os.Remove(dst) // bbolt creates it; the name only had to be unique
		defer func() {
			if err != nil {
				os.Remove(dst)
			}
		}()
	} else if _, err := os.Stat(dst); err == nil {
		return 0, 0, fmt.Errorf("compact %s: output %s exists", src, dst)
	}
	out, err := bolt.Open(dst, 0o600, &bolt.Options{Timeout: opts.Timeout})
	if err != nil {
		return 0, 0, fmt.Errorf("compact %s: create %s: %w", src, dst, err)
	}
	if err := in.guard(func() error { return copyLive(out, in.db) }); err != nil {
		out.Close()
		return 0, 0, fmt.Errorf("compact %s into %s: %w", src, dst, err)
	}
	if err := out.Close(); err != nil {
		return 0, 0, fmt.Errorf("compact %s: close %s: %w", src, dst, err)
	}
	sb, err := os.Stat(src)
	if err != nil {
		return 0, 0, err
	}
	sa, err := os.Stat(dst)
	if err != nil {
		return 0, 0, err
	}
	if inPlace {
		if err := os.Rename(dst, src); err != nil {
			return 0, 0, fmt.Errorf("compact %s: replace: %w", src, err)
		}
		if d, err := os.Open(filepath.Dir(src)); err == nil {
			d.Sync() // make the rename durable; failure only risks the old file coming back
			d.Close()
		}
	}
	in.log.Info("store compacted", "path", src, "before", sb.Size(), "after", sa.Size())
	return sb.Size(), sa.Size(), nil
}

// initialMmap is the address space a read-write open maps from the start. When the file
// outgrows the map, bbolt maps it anew and first copies every key and value that the write
// transaction's dirty nodes point into the old map: a fold over 1M edges copied 800 MiB that
// way (issue 19.2). Only pages in use are resident, so a larger map costs address space, not
// memory; bbolt doubles it from there when a store outgrows it. With a map above its
// AllocSize (16 MiB) bbolt grows the file 16 MiB at a time: the tail beyond the data is not
// written, so it takes no disk blocks (a store of 1k edges is a 16 MiB file using 2.3 MiB).
const initialMmap = 1 << 30
