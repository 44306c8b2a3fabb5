package aggregate

import (
	"cmp"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/recommender/recommender/pkg/flows"
)

// resumeMargin is how far, in flow time, a file mark trails the newest record read. A restart
// seeks to the mark and reads the records after it again: the cursor drops those applied,
// and the Folder sees both observations of every connection after the mark again, which it
// would not if the first of them lay before the mark (observations of one connection are at
// most flows.FoldWindow apart; a minute also covers recordings merged slightly out of order).
const resumeMargin = time.Minute

// maxCheckpoints bounds the positions kept per file. One is kept per second of flow time at
// most, so the oldest half, dropped when it is full, is always older than resumeMargin.
const maxCheckpoints = 256

type checkpoint struct {
	pos flows.FilePos
	t   time.Time
}

// fileTracker follows the positions of an Ingester's input files (issue 15.7). passed and safe
// run on Run's goroutine; marks on the committer's, stored from anywhere.
type fileTracker struct {
	paths map[string][]checkpoint
	maxT  time.Time

	// mu guards committed.
	mu        sync.Mutex
	committed map[string]flows.FileMark
}

func newFileTracker(stored []flows.FileMark) *fileTracker {
	t := &fileTracker{paths: make(map[string][]checkpoint), committed: make(map[string]flows.FileMark)}
	for _, m := range stored {
		t.committed[m.Path] = m
	}
	return t
}

// passed records that every record up to pos was applied or dropped; t is the time of the
// record just before pos.
func (f *fileTracker) passed(pos flows.FilePos, t time.Time) {
	if t.After(time.Now().Add(maxClockSkew)) {
		return // a record dated 2099 must not make every position look a minute old
	}
	if t.After(f.maxT) {
		f.maxT = t
	}
	cps := f.paths[pos.Path]
	if n := len(cps); n > 0 && t.Before(cps[n-1].t.Add(time.Second)) {
		return
	}
	if len(cps) >= maxCheckpoints {
		cps = append(cps[:0], cps[len(cps)/2:]...)
	}
	f.paths[pos.Path] = append(cps, checkpoint{pos, t})
}

// safe returns, per file, the newest checkpoint at least resumeMargin older than the newest
// record read, and forgets the checkpoints before it.
func (f *fileTracker) safe() []checkpoint {
	cut := f.maxT.Add(-resumeMargin)
	var out []checkpoint
	for path, cps := range f.paths {
		for i := len(cps) - 1; i >= 0; i-- {
			if !cps[i].t.After(cut) {
				out = append(out, cps[i])
				f.paths[path] = cps[i+1:]
				break
			}
		}
	}
	return out
}

// marks turns positions into marks (reading each file's identity) and returns every mark the
// store is to hold, or nil when nothing changed. A file that cannot be read keeps its old mark.
func (f *fileTracker) marks(cps []checkpoint, log *slog.Logger) []flows.FileMark {
	if len(cps) == 0 {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range cps {
		m, err := flows.Mark(c.pos)
		if err != nil {
			log.Debug("flow file not marked", "path", c.pos.Path, "err", err)
			continue
		}
		m.Time = c.t
		f.committed[c.pos.Path] = m
	}
	return f.storedLocked()
}

func (f *fileTracker) stored() []flows.FileMark {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.storedLocked()
}

func (f *fileTracker) storedLocked() []flows.FileMark {
	return slices.SortedFunc(maps.Values(f.committed), func(a, b flows.FileMark) int { return cmp.Compare(a.Path, b.Path) })
}
