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
// the edges of the nodes it read. A kept summary served from this very store is left out, as
// the Set leaves it out: its edges are own's. It returns the merge and the summaries merged.
func MergeKept(own *aggregate.Snapshot, ownStore string, kept []KeptSummary) (*aggregate.Snapshot, []KeptSummary) {
	snaps := make([]*aggregate.Snapshot, 0, 1+len(kept))
	snaps = append(snaps, own)
	var merged []KeptSummary
	for n, k := range kept {
		if ownStore != "" && (k.Store == ownStore || slices.Contains(k.Covers, ownStore)) {
			continue
		}
		// A retired summary of nothing but the store of the replica's kept one (left by an
		// earlier version) is the same store twice: the one reaching further is merged, as
		// loadKept does. kept is ordered by replica, the retired one after the other.
		if k.Retired && n > 0 && kept[n-1].Replica == k.Replica && !kept[n-1].Retired &&
			retiresOnly(kept[n-1].Store, k.Store, k.Covers) {
			prev := kept[n-1]
			if reaches(k.Snapshot.To, k.Snapshot.Flows, prev.Snapshot.To, prev.Snapshot.Flows) && len(merged) > 0 &&
				merged[len(merged)-1].Replica == prev.Replica && !merged[len(merged)-1].Retired {
				snaps[len(snaps)-1], merged[len(merged)-1] = k.Snapshot, k
			}
			continue
		}
		snaps = append(snaps, k.Snapshot)
		merged = append(merged, k)
	}
	return aggregate.Merge(snaps...), merged
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
