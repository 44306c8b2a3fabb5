package aggregate

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// The edge journal (schema 3, issue 19.2). A commit does not put its edges into the edge tree
// one by one: bbolt costs about 1.5-2.5 us of CPU per put (a seek from the root, the leaf
// materialized, its page written), and from 100k edges on, with traffic spread over them, a
// flow wrote one to two edges per commit. Instead a commit appends the batch, the edges it
// already encoded in key order, to the journal bucket as a few large values written
// sequentially. Once the journal holds foldRatio times the edges of the tree (or many batches:
// foldDue), a commit folds it into the tree: the tree and the journal merged, the newest entry
// of a key winning, and the tree written anew. Every reader sees the tree and the journal
// merged (forEachEdge).
//
// The edge tree (schema 4) is itself one sorted run of chunks, keyed by their last edge key
// alone: a fold that put every edge into a bbolt tree of one key per edge paid bbolt's put
// for each (about 0.6 us and 500 bytes allocated over 1M edges), which writing the merged
// edges as chunks replaces with one put per 64 KiB. A fold now rewrites the whole tree, also
// when few of its edges changed, so a quiet stream folds less often (foldDue).
//
// A batch is one or more chunks, each a bucket value of about journalChunk bytes:
//
//	key    <batch sequence number: 8 bytes BE> <store key of the chunk's last edge>
//	value  format:2 (journalFormat), CRC-32C:4 BE of the rest, then entries in key order:
//	       bytes shared with the previous entry's key, length of the rest of the key, the
//	       rest of the key; bytes shared with the previous entry's value, length of the rest
//	       of the value, the rest of the value (an empty value: the edge was deleted)
//
// Lengths are uvarints; a chunk's first entry shares nothing. Values share a prefix too: an
// edge value begins with its workload and peer, as its key does. Keys within a batch are unique:
// an edge deleted and created again in one batch is written as created, as the tree's
// deletions-first commit did. The tree's chunks are the same without the batch number in
// their key, and hold no deletions. Schema 3 wrote its journal in format 1
// (journalFormatFull), whose entries hold the whole key (key length, key, value length,
// value); the migration to schema 4 reads it.
var (
	bucketJournal = []byte("journal")
	// keyJournal (meta) holds journalRecord: what the fold rule needs without reading the
	// journal.
	keyJournal = []byte("journal")
)

const (
	// journalFormat is the chunk format commits write: keys and values prefix-compressed.
	// Sorted keys of one batch share most of their bytes (a workload's labels, then a peer's),
	// and keys were half of the journal's bytes, which are allocated, copied, checksummed and
	// written once each by bbolt (issue 19.2).
	journalFormat = 2
	// journalFormatFull is the chunk format of schema 3: whole keys.
	journalFormatFull = 1
	// journalChunk is the size a chunk is cut at. bbolt stores a value larger than a page in
	// contiguous overflow pages: small enough chunks find room among the pages a fold frees,
	// large enough ones keep the journal's keys (and the merge's cursor steps) few.
	journalChunk = 64 << 10
	// journalBlock is the size of the blocks commits encode chunks into, reused from one
	// commit to the next: one buffer sized for the batch was reallocated whenever a batch
	// outgrew the largest before, about 120 MB over the 1M-edge case (issue 19.2).
	journalBlock = 1 << 20
	// foldRatio: the journal is folded once it holds this many entries per edge of the tree.
	// Folding rewrites the tree, merged with the journal; with traffic spread over every edge
	// each batch holds nearly all of them, so the ratio is roughly how many batches one fold
	// serves. The journal's bytes are bounded by the same ratio.
	foldRatio = 2
	// foldMinEdges stands in for the tree's size while it is smaller, so that a new store
	// does not fold after every batch.
	foldMinEdges = 4096
	// foldBatches and maxBatches bound the batches in the journal, which every read merges: a
	// quiet stream commits small batches that would otherwise pile up. A fold rewrites the
	// whole tree, so past foldBatches it waits until the journal holds an eighth of the
	// tree's edges (foldQuietShare), and folds anyway at maxBatches: a quiet stream (a batch
	// every 5 s) over 1M edges rewrote its ~100 MiB tree every 2.7 minutes with the bound
	// at 32 batches alone, about 50 GB a day; at 256 batches it writes about what the
	// per-edge tree's folds did (the leaves a fold touched).
	foldBatches    = 32
	foldQuietShare = 8
	maxBatches     = 256
)

// foldDue reports whether the journal described by rec is due to be folded into the tree.
func foldDue(rec journalRecord) bool {
	tree := max(rec.Tree, foldMinEdges)
	switch {
	case rec.Entries == 0:
		return false
	case rec.Entries >= foldRatio*tree, rec.Batches >= maxBatches:
		return true
	}
	return rec.Batches >= foldBatches && rec.Entries*foldQuietShare >= rec.Tree
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// journalRecord is meta "journal".
type journalRecord struct {
	Batches int    `json:"batches"` // batches in the journal
	Entries int    `json:"entries"` // edge entries in the journal, deletions included
	Tree    int    `json:"tree"`    // edges in the tree after the last fold
	Next    uint64 `json:"next"`    // sequence number of the next batch
}

func readJournalRecord(meta *bolt.Bucket) (journalRecord, error) {
	var r journalRecord
	if v := meta.Get(keyJournal); v != nil {
		if err := json.Unmarshal(v, &r); err != nil {
			return r, fmt.Errorf("decode journal record: %w", err)
		}
	}
	return r, nil
}

func putJournalRecord(meta *bolt.Bucket, r journalRecord) error {
	v, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := meta.Put(keyJournal, v); err != nil {
		return fmt.Errorf("put journal record: %w", err)
	}
	return nil
}

// createJournal upgrades schema 2 to 3: the journal bucket, empty, and its record; the edges
// stay in the tree.
func createJournal(tx *bolt.Tx) error {
	if _, err := tx.CreateBucketIfNotExists(bucketJournal); err != nil {
		return fmt.Errorf("create bucket %s: %w", bucketJournal, err)
	}
	n := tx.Bucket(bucketEdges).Stats().KeyN
	return putJournalRecord(tx.Bucket(bucketMeta), journalRecord{Tree: n})
}

// edgeBlocks upgrades schema 3 to 4: the edge tree, one bbolt key per edge until then, and the
// journal are merged and written as the tree's chunks, and the journal is emptied; its chunks
// are prefix-compressed from then on (journalFormat).
func edgeBlocks(tx *bolt.Tx) error {
	meta := tx.Bucket(bucketMeta)
	rec, err := readJournalRecord(meta)
	if err != nil {
		return err
	}
	srcs, err := edgeSources(tx, nil, &edgeSource{plain: tx.Bucket(bucketEdges).Cursor()})
	if err != nil {
		return err
	}
	n, err := writeTree(tx, srcs)
	if err != nil {
		return err
	}
	return putJournalRecord(meta, journalRecord{Tree: n, Next: rec.Next})
}

// writeEdges journals the batch's edge changes and folds the journal when the rule says so.
// The chunks are encoded into scratch, which is kept for the next commit.
func writeEdges(tx *bolt.Tx, b *Batch, scratch *commitScratch) error {
	meta := tx.Bucket(bucketMeta)
	rec, err := readJournalRecord(meta)
	if err != nil {
		return err
	}
	n, err := appendJournal(tx.Bucket(bucketJournal), rec.Next, b, scratch)
	if err != nil {
		return err
	}
	if n > 0 {
		rec.Batches++
		rec.Entries += n
		rec.Next++
	}
	if foldDue(rec) {
		if err := foldJournal(tx); err != nil {
			return err
		}
		rec = journalRecord{Tree: b.EdgeCount, Next: rec.Next}
	}
	return putJournalRecord(meta, rec)
}

// appendJournal writes the batch's changed and deleted edges as batch seq, encoded into
// scratch, and returns the number of entries.
func appendJournal(j *bolt.Bucket, seq uint64, b *Batch, scratch *commitScratch) (int, error) {
	x := &b.edges
	order := x.sorted(&scratch.ranks)
	var deleted [][]byte
	if len(b.DeletedEdges) > 0 {
		written := make(map[string]bool, len(order))
		for i := range x.len() {
			written[string(x.key(i))] = true
		}
		for i := range b.DeletedEdges {
			if k := edgeKey(&b.DeletedEdges[i]); !written[string(k)] {
				deleted = append(deleted, k)
			}
		}
		slices.SortFunc(deleted, bytes.Compare)
	}
	n := len(order) + len(deleted)
	if n == 0 {
		return 0, nil
	}
	// The chunks are encoded into the scratch's blocks: bbolt keeps the values it is given
	// until the transaction ends, and the next commit reuses them.
	used := 0         // blocks used
	j.FillPercent = 1 // keys only grow: pages are never split to make room in the middle
	w := chunkWriter{
		prefix: binary.BigEndian.AppendUint64(nil, seq),
		alloc: func() []byte {
			if used == len(scratch.blocks) {
				scratch.blocks = append(scratch.blocks, make([]byte, 0, journalBlock))
			}
			used++
			return scratch.blocks[used-1][:0]
		},
		put: func(k, v []byte) error {
			if err := j.Put(k, v); err != nil {
				return fmt.Errorf("put journal chunk of batch %d: %w", seq, err)
			}
			return nil
		},
	}
	add := w.add
	i, d := 0, 0
	for range n {
		var err error
		if d < len(deleted) && (i == len(order) || bytes.Compare(deleted[d], x.key(int(order[i].i))) < 0) {
			err = add(deleted[d], nil)
			d++
		} else {
			err = add(x.key(int(order[i].i)), x.value(int(order[i].i)))
			i++
		}
		if err != nil {
			return 0, err
		}
	}
	return n, w.flush()
}

// chunkWriter encodes entries, given in key order, into chunks of about journalChunk bytes
// (journalFormat) and puts each under prefix and the key of its last entry.
type chunkWriter struct {
	prefix []byte
	// alloc returns an empty buffer of journalBlock bytes' capacity for the chunks that
	// follow. The buffers must stay untouched until put's transaction has ended.
	alloc   func() []byte
	put     func(k, v []byte) error
	buf     []byte
	start   int    // where the current chunk starts in buf
	last    []byte // the key of the chunk's last entry
	lastVal []byte // its value
}

// add appends an entry: v nil or empty is a deletion. k and v need not outlive the call.
func (w *chunkWriter) add(k, v []byte) error {
	if w.start != len(w.buf) && len(w.buf)-w.start+len(k)+len(v)+4*binary.MaxVarintLen64 > journalChunk {
		if err := w.flush(); err != nil {
			return err
		}
	}
	shared, sharedVal := 0, 0
	if w.start == len(w.buf) {
		// A chunk starts where a whole one fits. Should it outgrow its buffer after all (an
		// entry larger than a chunk), append moves it to an array of its own, and the chunks
		// already put keep theirs.
		if cap(w.buf)-len(w.buf) < journalChunk+5 {
			w.buf, w.start = w.alloc(), 0
		}
		w.buf = append(w.buf, journalFormat, 0, 0, 0, 0)
	} else {
		shared, sharedVal = sharedPrefix(w.last, k), sharedPrefix(w.lastVal, v)
	}
	w.buf = binary.AppendUvarint(w.buf, uint64(shared))
	w.buf = binary.AppendUvarint(w.buf, uint64(len(k)-shared))
	w.buf = append(w.buf, k[shared:]...)
	w.buf = binary.AppendUvarint(w.buf, uint64(sharedVal))
	w.buf = binary.AppendUvarint(w.buf, uint64(len(v)-sharedVal))
	w.buf = append(w.buf, v[sharedVal:]...)
	w.last, w.lastVal = append(w.last[:0], k...), append(w.lastVal[:0], v...)
	return nil
}

// flush puts the current chunk, if it holds an entry.
func (w *chunkWriter) flush() error {
	if w.start == len(w.buf) {
		return nil
	}
	chunk := w.buf[w.start:len(w.buf):len(w.buf)]
	w.start = len(w.buf)
	binary.BigEndian.PutUint32(chunk[1:5], crc32.Checksum(chunk[5:], castagnoli))
	k := make([]byte, 0, len(w.prefix)+len(w.last))
	return w.put(append(append(k, w.prefix...), w.last...), chunk)
}

// sharedPrefix returns the length of the prefix a and b share.
func sharedPrefix(a, b []byte) int {
	if len(a) > len(b) {
		a, b = b, a
	}
	return commonPrefix(a, b)
}

// foldJournal writes the edge tree anew, merged with the journal, and empties the journal.
func foldJournal(tx *bolt.Tx) error {
	srcs, err := edgeSources(tx, nil, &edgeSource{j: tx.Bucket(bucketEdges).Cursor()})
	if err != nil {
		return err
	}
	_, err = writeTree(tx, srcs)
	return err
}

// writeTree replaces the edge tree with the sources merged, deletions left out, empties the
// journal, and returns the number of edges written. The chunks are encoded into new buffers
// first (the sources read the buckets it replaces); bbolt holds them until the transaction
// ends.
func writeTree(tx *bolt.Tx, srcs []*edgeSource) (int, error) {
	var keys, chunks [][]byte
	w := chunkWriter{
		alloc: func() []byte { return make([]byte, 0, journalBlock) },
		put: func(k, v []byte) error {
			keys, chunks = append(keys, k), append(chunks, v)
			return nil
		},
	}
	n := 0
	err := mergeEdges(srcs, nil, false, func(k, v []byte) error {
		n++
		return w.add(k, v)
	})
	if err == nil {
		err = w.flush()
	}
	if err != nil {
		return 0, err
	}
	for _, name := range [][]byte{bucketEdges, bucketJournal} {
		if err := tx.DeleteBucket(name); err != nil {
			return 0, fmt.Errorf("fold: drop bucket %s: %w", name, err)
		}
		if _, err := tx.CreateBucket(name); err != nil {
			return 0, fmt.Errorf("fold: create bucket %s: %w", name, err)
		}
	}
	tree := tx.Bucket(bucketEdges)
	tree.FillPercent = 1 // written in key order: no page is split to make room in the middle
	for i, k := range keys {
		if err := tree.Put(k, chunks[i]); err != nil {
			return 0, fmt.Errorf("fold: put edge chunk %q: %w", k, err)
		}
	}
	return n, nil
}

// checkJournal verifies the format and checksum of every journal chunk, and from schema 4 on
// of every chunk of the edge tree: bbolt reads a large value's pages as raw bytes, so damage
// there shows nowhere else. It reads the whole journal and tree.
func checkJournal(tx *bolt.Tx, schema uint32) error {
	if schema >= 4 {
		err := tx.Bucket(bucketEdges).ForEach(func(k, v []byte) error {
			if s := (edgeSource{}); !s.load(v) {
				return s.err
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	j := tx.Bucket(bucketJournal)
	if j == nil {
		return nil // schema 2 and older: the migration creates it
	}
	return j.ForEach(func(k, v []byte) error {
		if len(k) < 8 {
			return fmt.Errorf("%w (journal key %q); %s", ErrCorrupt, k, corruptHint)
		}
		if s := (edgeSource{seq: k[:8]}); !s.load(v) {
			return s.err
		}
		return nil
	})
}

// forEachEdge calls fn with the key and value of every stored edge whose key starts with
// prefix, in key order: the tree merged with the journal. k and v are valid during the call
// only (a chunk's keys and values are rebuilt in buffers of its source).
func forEachEdge(tx *bolt.Tx, prefix []byte, fn func(k, v []byte) error) error {
	srcs, err := edgeSources(tx, prefix, &edgeSource{j: tx.Bucket(bucketEdges).Cursor()})
	if err != nil {
		return err
	}
	return mergeEdges(srcs, prefix, false, fn)
}

// edgeSources returns a source for each batch of the journal and tree, a source on the edge
// tree, each positioned at its first entry at or after prefix; those with none are left out.
func edgeSources(tx *bolt.Tx, prefix []byte, tree *edgeSource) ([]*edgeSource, error) {
	srcs, err := journalSources(tx.Bucket(bucketJournal), prefix)
	if err != nil {
		return nil, err
	}
	if tree.seek(prefix) {
		srcs = append(srcs, tree)
	}
	if tree.err != nil {
		return nil, tree.err
	}
	return srcs, nil
}

// edgeSource is one sorted run of edges: the tree, or one batch of the journal.
type edgeSource struct {
	// newer orders sources holding the same key: the journal's batches by sequence number,
	// all of them above the tree (0).
	newer uint64
	// plain is a cursor on a tree of one bbolt key per edge (schema 3 and older), which only
	// the migration to schema 4 reads; nil for chunks.
	plain *bolt.Cursor
	j     *bolt.Cursor // the cursor on the current chunk: of the tree, or of a journal batch
	seq   []byte       // the chunks' key prefix: the batch number, empty for the tree
	rest  []byte       // the current chunk's entries after the current one
	// format is the current chunk's: journalFormat entries rebuild their key in kbuf and
	// their value in vbuf from the previous entry's.
	format byte
	kbuf   []byte
	vbuf   []byte
	key    []byte
	val    []byte // nil: a deletion
	err    error
}

// journalSources returns a source for each batch in the journal, each positioned at its first
// entry at or after prefix; batches with none are left out.
func journalSources(j *bolt.Bucket, prefix []byte) ([]*edgeSource, error) {
	var srcs []*edgeSource
	c := j.Cursor()
	for k, _ := c.First(); k != nil; {
		if len(k) < 8 {
			return nil, fmt.Errorf("%w: journal key %q", ErrCorrupt, k)
		}
		seq := binary.BigEndian.Uint64(k)
		s := &edgeSource{newer: seq + 1, j: j.Cursor(), seq: bytes.Clone(k[:8])}
		if s.seek(prefix) {
			srcs = append(srcs, s)
		}
		if s.err != nil {
			return nil, s.err
		}
		if seq == ^uint64(0) {
			break
		}
		k, _ = c.Seek(binary.BigEndian.AppendUint64(nil, seq+1))
	}
	return srcs, nil
}

// seek positions s at its first entry whose key is at or after prefix, and reports whether
// there is one.
func (s *edgeSource) seek(prefix []byte) bool {
	if s.plain != nil {
		s.key, s.val = s.plain.Seek(prefix)
		return s.key != nil
	}
	// A chunk is keyed by its last entry: the first chunk of the run keyed at or after
	// prefix holds the first entry at or after it.
	k, v := s.j.Seek(append(s.seq[:len(s.seq):len(s.seq)], prefix...))
	if !s.mine(k) || !s.load(v) {
		return false
	}
	for s.next() {
		if bytes.Compare(s.key, prefix) >= 0 {
			return true
		}
	}
	return false
}

// mine reports whether chunk key k belongs to s's run.
func (s *edgeSource) mine(k []byte) bool {
	return k != nil && len(k) >= len(s.seq) && bytes.Equal(k[:len(s.seq)], s.seq)
}

// what names s's chunks in errors.
func (s *edgeSource) what() string {
	if len(s.seq) == 0 {
		return "edge tree chunk"
	}
	return fmt.Sprintf("journal chunk of batch %d", binary.BigEndian.Uint64(s.seq))
}

// load makes chunk v the current one.
func (s *edgeSource) load(v []byte) bool {
	if len(v) < 5 || (v[0] != journalFormat && v[0] != journalFormatFull) || binary.BigEndian.Uint32(v[1:5]) != crc32.Checksum(v[5:], castagnoli) {
		s.err = fmt.Errorf("%w (%s: bad format or checksum); %s", ErrCorrupt, s.what(), corruptHint)
		return false
	}
	s.format, s.rest, s.kbuf, s.vbuf = v[0], v[5:], s.kbuf[:0], s.vbuf[:0]
	return true
}

// next moves to the next entry and reports whether there is one.
func (s *edgeSource) next() bool {
	if s.plain != nil {
		s.key, s.val = s.plain.Next()
		return s.key != nil
	}
	for len(s.rest) == 0 {
		k, v := s.j.Next()
		if !s.mine(k) {
			s.key, s.val = nil, nil
			return false
		}
		if !s.load(v) {
			return false
		}
	}
	r := edgeReader{b: s.rest}
	if s.format == journalFormatFull {
		kl := r.uvarint()
		if r.err == nil && kl > 0 && kl <= uint64(len(r.b)) {
			s.key, r.b = r.b[:kl:kl], r.b[kl:]
			vl := r.uvarint()
			if r.err == nil && vl <= uint64(len(r.b)) {
				s.val, s.rest = r.b[:vl:vl], r.b[vl:]
				if vl == 0 {
					s.val = nil
				}
				return true
			}
		}
	} else {
		shared, sl := r.uvarint(), r.uvarint()
		if r.err == nil && shared <= uint64(len(s.kbuf)) && sl <= uint64(len(r.b)) && shared+sl > 0 {
			s.kbuf, r.b = append(s.kbuf[:shared], r.b[:sl]...), r.b[sl:]
			shared, sl = r.uvarint(), r.uvarint()
			if r.err == nil && shared <= uint64(len(s.vbuf)) && sl <= uint64(len(r.b)) {
				s.vbuf, s.rest = append(s.vbuf[:shared], r.b[:sl]...), r.b[sl:]
				s.key, s.val = s.kbuf, s.vbuf
				if len(s.vbuf) == 0 {
					s.val = nil
				}
				return true
			}
		}
	}
	s.err = fmt.Errorf("%w (%s: malformed entry); %s", ErrCorrupt, s.what(), corruptHint)
	s.key, s.val = nil, nil
	return false
}

// before orders the merge's heap: smaller key first, and of equal keys the newer source.
func (s *edgeSource) before(o *edgeSource) bool {
	if c := bytes.Compare(s.key, o.key); c != 0 {
		return c < 0
	}
	return s.newer > o.newer
}

// mergeEdges merges the sources, each positioned on its first entry, in key order while keys
// start with prefix, and calls fn with the newest entry of every key. Deletions are passed on
// (v nil) only when deletions is set, else skipped.
func mergeEdges(srcs []*edgeSource, prefix []byte, deletions bool, fn func(k, v []byte) error) error {
	h := srcs
	down := func(i int) {
		for {
			l := 2*i + 1
			if l >= len(h) {
				return
			}
			if r := l + 1; r < len(h) && h[r].before(h[l]) {
				l = r
			}
			if !h[l].before(h[i]) {
				return
			}
			h[i], h[l] = h[l], h[i]
			i = l
		}
	}
	for i := len(h)/2 - 1; i >= 0; i-- {
		down(i)
	}
	// advance moves the top source on, dropping it from the heap when it ends or leaves the
	// prefix.
	advance := func() error {
		s := h[0]
		if s.next() && bytes.HasPrefix(s.key, prefix) {
			down(0)
			return nil
		}
		if s.err != nil {
			return s.err
		}
		h[0] = h[len(h)-1]
		h = h[:len(h)-1]
		down(0)
		return nil
	}
	var k []byte // the current key, copied: a source rebuilds its keys in place
	for len(h) > 0 {
		v := h[0].val
		k = append(k[:0], h[0].key...)
		if v != nil || deletions {
			if err := fn(h[0].key, v); err != nil {
				return err
			}
		}
		// The older entries of the same key are superseded.
		if err := advance(); err != nil {
			return err
		}
		for len(h) > 0 && bytes.Equal(h[0].key, k) {
			if err := advance(); err != nil {
				return err
			}
		}
	}
	return nil
}
