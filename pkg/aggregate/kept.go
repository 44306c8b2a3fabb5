package aggregate

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"maps"
	"slices"
	"strings"

	bolt "go.etcd.io/bbolt"
)

// bucketKept holds values another package keeps in the store beside the edges: the last
// summary a replica pulled from each other replica of its set (package replicas), so that a
// restart does not forget the edges of a replica that is down or has left the set. It is
// created by the first Keep, not by Open or a migration: a store without it is the same
// schema, and an older recommender opening the store ignores it (Compact copies it).
var bucketKept = []byte("kept")

// keptFormat is the first byte of a kept value; a CRC-32C (Castagnoli) of the payload
// follows, then the payload. bbolt checksums only its meta pages, and a kept value is read
// back after a restart, so a damaged one must be told from a good one.
const keptFormat = 1

// Keep stores each value under its key in the kept bucket, replacing what was there, all in
// one write transaction: fsynced when it returns, as a Commit is, and after a crash either
// all of them are there or none. Values that belong together (a replica's summary and what
// it replaced) are kept in one call.
func (s *Store) Keep(vals map[string][]byte) error {
	if len(vals) == 0 {
		return nil
	}
	stored := make(map[string][]byte, len(vals))
	for key, v := range vals {
		if key == "" {
			return errors.New("keep: empty key")
		}
		val := make([]byte, 5, 5+len(v))
		val[0] = keptFormat
		binary.BigEndian.PutUint32(val[1:5], crc32.Checksum(v, castagnoli))
		stored[key] = append(val, v...)
	}
	err := s.update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketKept)
		if err != nil {
			return err
		}
		for key, val := range stored {
			if err := b.Put([]byte(key), val); err != nil {
				return fmt.Errorf("%q: %w", key, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("keep %s in store %s: %w", strings.Join(slices.Sorted(maps.Keys(vals)), ", "), s.path, err)
	}
	s.updateSize()
	return nil
}

// Forget removes key from the kept bucket; a key not there is no error.
func (s *Store) Forget(key string) error {
	err := s.update(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketKept); b != nil {
			return b.Delete([]byte(key))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("forget %q in store %s: %w", key, s.path, err)
	}
	return nil
}

// Kept returns a copy of every kept value, by key. A value that fails its checksum is left
// out of the map and named in the error, which wraps ErrCorrupt; the good values are returned
// with it, since each kept value stands alone. Nothing is removed: the next Keep of that key
// replaces it.
func (s *Store) Kept() (map[string][]byte, error) {
	out := make(map[string][]byte)
	var bad []error
	err := s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketKept)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			if len(v) < 5 || v[0] != keptFormat || binary.BigEndian.Uint32(v[1:5]) != crc32.Checksum(v[5:], castagnoli) {
				bad = append(bad, fmt.Errorf("%w: kept value %q (%d bytes) fails its checksum or format", ErrCorrupt, k, len(v)))
				return nil
			}
			out[string(k)] = bytes.Clone(v[5:])
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("read kept values from store %s: %w", s.path, err)
	}
	if len(bad) > 0 {
		return out, fmt.Errorf("store %s: %w", s.path, errors.Join(bad...))
	}
	return out, nil
}
