package replicas

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/recommender/recommender/pkg/aggregate"
	"github.com/recommender/recommender/pkg/flows"
)

// KeptSummary is a summary a Set kept in its store (Local.Kept), read without a Set: what
// `recommend --db` merges and `status` lists of a replica's store.
type KeptSummary struct {
	// Replica is the index of the replica that served it.
	Replica int
	// Retired says it is what the replica served before its store was replaced: it stands
	// in beside the replica's newer summary, not for it.
	Retired bool
	// Store is the identity of the store it was served from (Summary.Store), empty from
	// replicas of older versions; Covers, of a retired one, every store it merges.
	Store  string
	Covers []string
	// PulledAt is when the keeping replica pulled it, on that replica's clock.
	PulledAt  time.Time
	Snapshot  *aggregate.Snapshot
	Positions *flows.Cursor
}

// keptEntry is a value of the kept bucket decoded.
type keptEntry struct {
	replica int
	retired bool
	p       *pulled
}

// ReadKept returns the summaries a Set kept in k, ordered by replica, a retired summary after
// the replica's other one. A value that cannot be read is logged and left out; an error is a
// store that could not be read at all.
func ReadKept(k SummaryStore, log *slog.Logger) ([]KeptSummary, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	entries, err := readKept(k, log)
	if err != nil {
		return nil, err
	}
	out := make([]KeptSummary, len(entries))
	for n, e := range entries {
		out[n] = KeptSummary{Replica: e.replica, Retired: e.retired, Store: e.p.store, Covers: coversOf(e.p.store, e.p.covers), PulledAt: e.p.pulledAt, Snapshot: e.p.snap, Positions: e.p.pos}
	}
	return out, nil
}

// MergeKept returns own, the snapshot of the store whose identity is ownStore, merged with the
// summaries kept beside it (ReadKept): what a daemon alone on that store (run with
// --replicas 1) synthesizes from before it reads a flow, but without the expiry by
// --retention its syncs apply, as the store's own edges are read as stored too. The replica
// set's edges are then all there, each kept summary at most one keep interval
// (DefaultKeepEvery) behind its replica's last state; one replica's store alone holds only
// the edges of the nodes it read. A kept summary covering this very store is left out, as
// the Set leaves it out: its edges are own's; one store kept twice is merged once, as the Set
// merges it (keptTwice). It returns the merge and the summaries merged; log may be nil.
func MergeKept(own *aggregate.Snapshot, ownStore string, kept []KeptSummary, log *slog.Logger) (*aggregate.Snapshot, []KeptSummary) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var merged []KeptSummary
	for _, k := range kept {
		if ownStore != "" && (k.Store == ownStore || slices.Contains(k.Covers, ownStore)) {
			continue
		}
		// kept is ordered by replica, the retired summary after the other one.
		if n := len(merged); k.Retired && n > 0 && merged[n-1].Replica == k.Replica && !merged[n-1].Retired {
			switch mine := merged[n-1]; keptTwice(mine.Store, mine.Snapshot, k.Store, k.Covers, k.Snapshot, 0) {
			case twiceKeptFurther:
				continue
			case twiceRetiredFurther:
				merged[n-1] = k
				continue
			case twiceMerged:
				log.Warn("a replica's store is kept both as its summary and within its retired one: that store's edges are counted twice (counts only, the edges are right)",
					"peer", k.Replica, "store", mine.Store, "covers", k.Covers)
			}
		}
		merged = append(merged, k)
	}
	snaps := make([]*aggregate.Snapshot, 0, 1+len(merged))
	snaps = append(snaps, own)
	for _, k := range merged {
		snaps = append(snaps, k.Snapshot)
	}
	return aggregate.Merge(snaps...), merged
}

// holdsEdges reports whether have holds every edge of old (aggregate.Snapshot.HoldsEdgesOf)
// but those a retention (0: none) counted from have's newest flow expires, as the replica
// that serves have expires its own.
func holdsEdges(have, old *aggregate.Snapshot, retention time.Duration) bool {
	if retention > 0 && !have.To.IsZero() {
		old = old.Expired(have.To.Add(-retention))
	}
	return have.HoldsEdgesOf(old)
}

// twice is what keptTwice says of a replica's kept summary beside its retired one.
type twice int

const (
	// notTwice: they hold different stores, and both are merged.
	notTwice twice = iota
	// twiceKeptFurther: the retired one holds nothing but the kept one's store (an earlier
	// version kept one store both ways) and the kept one reaches as far: it alone is merged.
	twiceKeptFurther
	// twiceRetiredFurther: the same, the retired one reaching further: it alone is merged,
	// standing in as the replica's.
	twiceRetiredFurther
	// twiceMerged: the retired one merges the kept one's store with others and cannot be
	// split, or the one reaching further lacks edges of the other: both are merged, and that
	// store's flows counted twice.
	twiceMerged
)

// keptTwice tells whether a replica's kept summary (from store, snap) and its retired one
// (from rStore, merging rCovers, rSnap) hold one store twice, and which is merged: loadKept
// and MergeKept decide alike, and as retire does (holdsEdges), so a daemon and `recommend
// --db` on one store agree. MergeKept passes no retention, as it expires nothing: a pair one
// of whose edges only the retention would expire is merged there both.
func keptTwice(store string, snap *aggregate.Snapshot, rStore string, rCovers []string, rSnap *aggregate.Snapshot, retention time.Duration) twice {
	switch {
	case retiresOnly(store, rStore, rCovers):
		// The one reaching further is the later state, unless it lacks an edge of the other
		// (a store restored from a backup, retire): then both are merged.
		if reaches(rSnap.To, rSnap.Flows, snap.To, snap.Flows) {
			if holdsEdges(rSnap, snap, retention) {
				return twiceRetiredFurther
			}
		} else if holdsEdges(snap, rSnap, retention) {
			return twiceKeptFurther
		}
		return twiceMerged
	case store != "" && slices.Contains(coversOf(rStore, rCovers), store):
		return twiceMerged
	}
	return notTwice
}

// readKept decodes every kept and retired summary in k, ordered by replica and retired
// last. Values that do not decode are logged and left out.
func readKept(k SummaryStore, log *slog.Logger) ([]keptEntry, error) {
	vals, err := k.Kept()
	if vals == nil && err != nil {
		return nil, fmt.Errorf("replicas: kept summaries: %w", err)
	}
	if err != nil {
		log.Warn("kept replica summaries left out: those replicas stand in only once they answer", "err", err)
	}
	var out []keptEntry
	for key, v := range vals {
		i, ok := keptIndex(key)
		retired := false
		if !ok {
			if i, ok = indexAfter(key, retiredPrefix); !ok {
				continue
			}
			retired = true
		}
		var ks keptSummary
		if err := json.Unmarshal(v, &ks); err != nil {
			log.Warn("kept replica summary left out: it does not decode", "peer", i, "key", key, "err", err)
			continue
		}
		p, err := decodeSummary(&ks.Summary, i)
		if err != nil {
			log.Warn("kept replica summary left out", "peer", i, "key", key, "err", err)
			continue
		}
		p.pulledAt, p.kept = ks.PulledAt, true
		out = append(out, keptEntry{replica: i, retired: retired, p: p})
	}
	slices.SortFunc(out, func(a, b keptEntry) int {
		if a.replica != b.replica {
			return a.replica - b.replica
		}
		if a.retired == b.retired {
			return 0
		}
		if a.retired {
			return 1
		}
		return -1
	})
	return out, nil
}
