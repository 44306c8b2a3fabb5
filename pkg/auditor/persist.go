package auditor

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/recommender/recommender/pkg/aggregate"
	"github.com/recommender/recommender/pkg/lifecycle"
)

// nodeTotalsKey and retiredKey hold the lifecycle machine's per-node totals and retired
// policies in the lifecycle bucket; no workload key starts with '~' (namespaces are DNS
// labels).
const (
	nodeTotalsKey = "~node-totals"
	retiredKey    = "~retired"
)

// Store is where the audit stage's state was persisted: the store's lifecycle bucket.
type Store interface {
	Lifecycles() (map[string][]byte, error)
	Path() string
}

// load restores the lifecycle machine from the store. A record of a workload that left the
// store meanwhile is loaded too: the first Update retires or forgets it as it would have.
func load(cfg lifecycle.Config, store Store) (*lifecycle.Machine, error) {
	values, err := store.Lifecycles()
	if err != nil {
		return nil, err
	}
	var records []*lifecycle.Record
	for _, key := range sortedKeys(values) {
		if strings.HasPrefix(key, "~") {
			continue
		}
		r, err := lifecycle.UnmarshalRecord(values[key])
		if err != nil {
			return nil, fmt.Errorf("store %s: lifecycle of %s: %w", store.Path(), key, err)
		}
		records = append(records, r)
	}
	machine := lifecycle.New(cfg, records)
	if b := values[nodeTotalsKey]; b != nil {
		var t lifecycle.NodeTotals
		if err := json.Unmarshal(b, &t); err != nil {
			return nil, fmt.Errorf("store %s: decode node totals: %w", store.Path(), err)
		}
		machine.RestoreTotals(t)
	}
	if b := values[retiredKey]; b != nil {
		var rs []lifecycle.Retirement
		if err := json.Unmarshal(b, &rs); err != nil {
			return nil, fmt.Errorf("store %s: decode retired policies: %w", store.Path(), err)
		}
		machine.RestoreRetired(rs)
	}
	return machine, nil
}

// persist runs inside each of the Ingester's commits (the one writer of lifecycle state): it
// writes every record changed and not yet known to be on disk, the node totals and the
// retirement ledger. A record stays pending until persisted reports the commit that carried
// it succeeded, so a failed commit loses nothing. The Ingester commits one batch at a time,
// so a persist is always followed by its own persisted, or by the next persist when the
// commit failed.
func (a *Auditor) persist(l *aggregate.Lifecycle) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	// The batch being committed holds events handed to Observe before now: their verdicts (a
	// window restarted by a would-be-denied flow) must be in this commit too, or a crash
	// after it would lose them with the flows already past the stored cursor.
	a.drainLocked()
	// Gone before dirty: Forget clears a record's dirty mark, so a record dirty now was
	// tracked again after it went and is live.
	for _, w := range a.machine.Gone() {
		delete(a.pending, w)
		a.pendingGone[w] = true
	}
	for _, r := range a.machine.Dirty() {
		a.pending[r.Workload] = r
		delete(a.pendingGone, r.Workload)
	}
	for _, w := range sortedKeys(a.pending) {
		b, err := a.pending[w].Marshal()
		if err != nil {
			return err
		}
		if err := l.Put(w, b); err != nil {
			return err
		}
	}
	for _, w := range sortedKeys(a.pendingGone) {
		if err := l.Delete(w); err != nil {
			return err
		}
	}
	b, err := json.Marshal(a.machine.Totals())
	if err != nil {
		return err
	}
	if err := l.Put(nodeTotalsKey, b); err != nil {
		return err
	}
	if b, err = json.Marshal(a.machine.Retirements()); err != nil {
		return err
	}
	return l.Put(retiredKey, b)
}

// persisted runs once the commit that persist wrote into is on disk.
func (a *Auditor) persisted() {
	a.mu.Lock()
	defer a.mu.Unlock()
	clear(a.pending)
	clear(a.pendingGone)
}
