package aggregate

import (
	"bytes"
	"cmp"
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
// sequentially. Once the journal holds foldRatio times the edges of the tree (or foldBatches
// batches), a commit folds it into the tree: its entries merged, newest first, and put in key
// order, so an edge changed in k batches is put into the tree once. Every reader sees the tree
// and the journal merged (forEachEdge), the newest entry of a key winning.
//
// A batch is one or more chunks, each a bucket value of about journalChunk bytes:
//
//	key    <batch sequence number: 8 bytes BE> <store key of the chunk's last edge>
//	value  format:2 (journalFormat), CRC-32C:4 BE of the rest, then entries in key order:
//	       bytes shared with the previous entry's key, length of the rest of the key, the
//	       rest of the key, value length, value (length 0: the edge was deleted)
//
// Lengths are uvarints; a chunk's first entry shares nothing. Keys within a batch are unique:
// an edge deleted and created again in one batch is written as created, as the tree's
// deletions-first commit did. Schema 3 wrote format 1 (journalFormatFull), whose entries
// hold the whole key (key length, key, value length, value); it is still read, so a
// migrated store's journal needs no rewrite.
var (
	bucketJournal = []byte("journal")
	// keyJournal (meta) holds journalRecord: what the fold rule needs without reading the
	// journal.
	keyJournal = []byte("journal")
)

const (
	// journalFormat is the chunk format commits write: keys prefix-compressed. Sorted keys of
	// one batch share most of their bytes (a workload's labels, then a peer's), and keys were
	// half of the journal's bytes, which are allocated, copied, checksummed and written once
	// each by bbolt (issue 19.2).
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
	// Folding costs about one put per distinct edge in the journal; with traffic spread over
	// every edge each batch holds nearly all of them, so the ratio is roughly how many
	// batches one fold serves. The journal's bytes are bounded by the same ratio.
	foldRatio = 2
	// foldMinEdges stands in for the tree's size while it is smaller, so that a new store
	// does not fold after every batch.
	foldMinEdges = 4096
	// foldBatches bounds the batches in the journal, which every read merges: a quiet stream
	// commits small batches that would otherwise pile up.
	foldBatches = 32
)

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

// compressedJournal upgrades schema 3 to 4, whose journal chunks hold prefix-compressed keys
// (journalFormat). Nothing is rewritten: the chunks schema 3 wrote are still read, and the
// next fold drops them. The schema changes so that an older binary refuses the store
// (ErrSchema) instead of reporting the new chunks as damaged.
func compressedJournal(*bolt.Tx) error { return nil }

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
	if rec.Entries > 0 && (rec.Batches >= foldBatches || rec.Entries >= foldRatio*max(rec.Tree, foldMinEdges)) {
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
	// The chunks are encoded into the scratch's blocks, a new chunk in the next block when
	// the current one has no room for a whole chunk: bbolt keeps the values it is given until
	// the transaction ends. Should a chunk outgrow its block after all (an entry larger than
	// a chunk), append moves it to an array of its own and the chunks already put keep theirs.
	var buf []byte
	used := 0 // blocks used
	nextBlock := func() {
		if used == len(scratch.blocks) {
			scratch.blocks = append(scratch.blocks, make([]byte, 0, journalBlock))
		}
		buf = scratch.blocks[used][:0]
		used++
	}
	nextBlock()
	j.FillPercent = 1 // keys only grow: pages are never split to make room in the middle
	start := 0
	var last []byte // the key of the chunk's last entry
	flush := func() error {
		if start == len(buf) {
			return nil
		}
		chunk := buf[start:len(buf):len(buf)]
		binary.BigEndian.PutUint32(chunk[1:5], crc32.Checksum(chunk[5:], castagnoli))
		k := binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(last)), seq)
		if err := j.Put(append(k, last...), chunk); err != nil {
			return fmt.Errorf("put journal chunk of batch %d: %w", seq, err)
		}
		start = len(buf)
		return nil
	}
	add := func(k, v []byte) error {
		if start != len(buf) && len(buf)-start+len(k)+len(v)+3*binary.MaxVarintLen64 > journalChunk {
			if err := flush(); err != nil {
				return err
			}
		}
		shared := 0
		if start == len(buf) {
			if cap(buf)-len(buf) < journalChunk+5 {
				nextBlock()
				start = 0
			}
			buf = append(buf, journalFormat, 0, 0, 0, 0)
		} else {
			shared = sharedPrefix(last, k)
		}
		buf = binary.AppendUvarint(buf, uint64(shared))
		buf = binary.AppendUvarint(buf, uint64(len(k)-shared))
		buf = append(buf, k[shared:]...)
		buf = binary.AppendUvarint(buf, uint64(len(v)))
		buf = append(buf, v...)
		last = k
		return nil
	}
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
	return n, flush()
}

// sharedPrefix returns the length of the prefix a and b share.
func sharedPrefix(a, b []byte) int {
	if len(a) > len(b) {
		a, b = b, a
	}
	return commonPrefix(a, b)
}

// foldJournal puts the journal's newest entry of every key into the tree (or deletes the key),
// in key order, and empties the journal.
func foldJournal(tx *bolt.Tx) error {
	tree, j := tx.Bucket(bucketEdges), tx.Bucket(bucketJournal)
	tree.FillPercent = edgesFill
	srcs, err := journalSources(j, nil)
	if err != nil {
		return err
	}
	// The values point into the journal's pages, which stay valid while the transaction
	// lasts (bbolt copies what its nodes hold before it remaps the file).
	err = mergeEdges(srcs, nil, true, func(k, v []byte) error {
		if v == nil {
			if err := tree.Delete(k); err != nil {
				return fmt.Errorf("fold: delete edge %q: %w", k, err)
			}
			return nil
		}
		if err := tree.Put(k, v); err != nil {
			return fmt.Errorf("fold: put edge %q: %w", k, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := tx.DeleteBucket(bucketJournal); err != nil {
		return fmt.Errorf("fold: empty the journal: %w", err)
	}
	if _, err := tx.CreateBucket(bucketJournal); err != nil {
		return fmt.Errorf("fold: empty the journal: %w", err)
	}
	return nil
}

// checkJournal verifies the format and checksum of every journal chunk: bbolt reads a large
// value's pages as raw bytes, so damage there shows nowhere else. It reads the whole journal,
// which the fold rule keeps within foldRatio times the edge tree.
func checkJournal(tx *bolt.Tx) error {
	j := tx.Bucket(bucketJournal)
	if j == nil {
		return nil // schema 2 and older: the migration creates it
	}
	return j.ForEach(func(k, v []byte) error {
		s := edgeSource{}
		if len(k) >= 8 {
			copy(s.seq[:], k[:8])
		}
		if len(k) < 8 || !s.load(v) {
			return cmp.Or(s.err, fmt.Errorf("%w (journal key %q); %s", ErrCorrupt, k, corruptHint))
		}
		return nil
	})
}

// forEachEdge calls fn with the key and value of every stored edge whose key starts with
// prefix, in key order: the tree merged with the journal. v is valid during tx only, k during
// the call only (the journal's keys are rebuilt in a buffer of their batch's).
func forEachEdge(tx *bolt.Tx, prefix []byte, fn func(k, v []byte) error) error {
	srcs, err := journalSources(tx.Bucket(bucketJournal), prefix)
	if err != nil {
		return err
	}
	tree := &edgeSource{tree: tx.Bucket(bucketEdges).Cursor()}
	if tree.seek(prefix) {
		srcs = append(srcs, tree)
	}
	if err := tree.err; err != nil {
		return err
	}
	return mergeEdges(srcs, prefix, false, fn)
}

// edgeSource is one sorted run of edges: the tree, or one batch of the journal.
type edgeSource struct {
	// newer orders sources holding the same key: the journal's batches by sequence number,
	// all of them above the tree (0).
	newer uint64
	tree  *bolt.Cursor // the tree's cursor, or nil for a batch
	j     *bolt.Cursor // the journal's cursor on this batch's current chunk
	seq   [8]byte      // the batch's key prefix in the journal
	rest  []byte       // the current chunk's entries after the current one
	// format is the current chunk's: journalFormat entries rebuild their key in kbuf from the
	// previous one.
	format byte
	kbuf   []byte
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
		s := &edgeSource{newer: seq + 1, j: j.Cursor()}
		copy(s.seq[:], k[:8])
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
	if s.tree != nil {
		s.key, s.val = s.tree.Seek(prefix)
		return s.key != nil
	}
	// A chunk is keyed by its last entry: the first chunk of the batch keyed at or after
	// prefix holds the first entry at or after it.
	k, v := s.j.Seek(append(s.seq[:], prefix...))
	if len(k) < 8 || !bytes.Equal(k[:8], s.seq[:]) || !s.load(v) {
		return false
	}
	for s.next() {
		if bytes.Compare(s.key, prefix) >= 0 {
			return true
		}
	}
	return false
}

// load makes chunk v the current one.
func (s *edgeSource) load(v []byte) bool {
	if len(v) < 5 || (v[0] != journalFormat && v[0] != journalFormatFull) || binary.BigEndian.Uint32(v[1:5]) != crc32.Checksum(v[5:], castagnoli) {
		s.err = fmt.Errorf("%w (journal chunk of batch %d: bad format or checksum); %s",
			ErrCorrupt, binary.BigEndian.Uint64(s.seq[:]), corruptHint)
		return false
	}
	s.format, s.rest, s.kbuf = v[0], v[5:], s.kbuf[:0]
	return true
}

// next moves to the next entry and reports whether there is one.
func (s *edgeSource) next() bool {
	if s.tree != nil {
		s.key, s.val = s.tree.Next()
		return s.key != nil
	}
	for len(s.rest) == 0 {
		k, v := s.j.Next()
		if len(k) < 8 || !bytes.Equal(k[:8], s.seq[:]) {
			s.key, s.val = nil, nil
			return false
		}
		if !s.load(v) {
			return false
		}
	}
	r := edgeReader{b: s.rest}
	ok := false
	if s.format == journalFormatFull {
		kl := r.uvarint()
		if r.err == nil && kl <= uint64(len(r.b)) {
			s.key, r.b = r.b[:kl:kl], r.b[kl:]
			ok = kl > 0
		}
	} else {
		shared, sl := r.uvarint(), r.uvarint()
		if r.err == nil && shared <= uint64(len(s.kbuf)) && sl <= uint64(len(r.b)) {
			s.kbuf = append(s.kbuf[:shared], r.b[:sl]...)
			s.key, r.b = s.kbuf, r.b[sl:]
			ok = len(s.key) > 0
		}
	}
	if ok {
		vl := r.uvarint()
		if r.err == nil && vl <= uint64(len(r.b)) {
			s.val, s.rest = r.b[:vl:vl], r.b[vl:]
			if vl == 0 {
				s.val = nil
			}
			return true
		}
	}
	s.err = fmt.Errorf("%w (journal chunk of batch %d: malformed entry); %s",
		ErrCorrupt, binary.BigEndian.Uint64(s.seq[:]), corruptHint)
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
