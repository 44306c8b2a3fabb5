package replicas

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/recommender/recommender/pkg/aggregate"
	"github.com/recommender/recommender/pkg/flows"
	"github.com/recommender/recommender/pkg/lifecycle"
)

// SummaryPath is where a replica serves its Summary on its metrics port.
const SummaryPath = "/replica/summary"

// SummaryType is the media type a puller asks for (Accept) to be sent the snapshot in its
// binary form (Summary.SnapshotBinary), in version aggregate.SnapshotVersion of that form. A
// replica asked for anything else serves the JSON form (Summary.Snapshot), as replicas before
// it did, so a set mixing versions during a rollout still merges: an older puller, or one that
// reads another version of the binary form, asks for a type this replica does not serve.
var SummaryType = "application/vnd.recommender.summary.snapshot-v" + strconv.Itoa(aggregate.SnapshotVersion) + "+json"

// Defaults of Config.
const (
	DefaultTimeout = 10 * time.Second
	DefaultWait    = time.Minute
	// DefaultMaxSummary bounds a pulled summary, so a URL that answers with something
	// endless or enormous fails the pull instead of the daemon (MaxSummaryFor).
	DefaultMaxSummary = 256 << 20
	// DefaultKeepEvery spaces the writes of one replica's pulled summary into the store
	// (Local.Kept): a summary of 100k edges is about 9 MB to write.
	DefaultKeepEvery = 5 * time.Minute
	// retryEvery spaces the first Snapshot's pulls of replicas that did not answer yet.
	retryEvery = time.Second
)

// Config configures a Set. Field names follow the flags of `run`.
type Config struct {
	// Self is this replica's index in URLs (--replica-index).
	Self int
	// URLs are the base URLs of every replica's metrics port, by index (--replica-urls);
	// URLs[Self] is this replica's own and is never pulled. None is a daemon alone (Self 0)
	// whose store keeps the summaries of a set it was part of (Local.Kept, HasKept): it pulls
	// nobody and merges them as stand-ins.
	URLs []string
	// Timeout bounds one pull (default DefaultTimeout).
	Timeout time.Duration
	// MaxSummary bounds the bytes of one pulled summary (default DefaultMaxSummary).
	MaxSummary int64
	// Wait is how long the first Snapshot, which the daemon takes before it reads any flow,
	// waits for every other replica to answer once (--replica-wait; default DefaultWait),
	// or with Set.WaitFor for every other live one. A node that moved here is read from
	// where its previous owner stopped only once that owner's summary was pulled; one that
	// never answers within Wait is read from the oldest flow its node holds.
	Wait time.Duration
	// Retention (--retention) expires the edges of a summary that stands in for a replica
	// (one that does not answer, or has left the set) as that replica would have expired
	// them, measured against this replica's newest flow; zero keeps them.
	Retention time.Duration
	// KeepEvery is how often a replica's pulled summary is written to Local.Kept (default
	// DefaultKeepEvery); the first pull of each replica, and a pull after the live set
	// changed (a replica stopping cleanly is pulled one last time), are written at once.
	KeepEvery time.Duration
}

// MaxSummaryFor is the bound of a pulled summary (Config.MaxSummary) for replicas that keep
// at most maxEdges edges each (--max-edges): 1 KiB per edge, at least DefaultMaxSummary. A
// summary takes about 70 bytes per edge in the binary form and 800 in the JSON form older
// replicas serve (BenchmarkSummary), so either fits; decoding the binary form allocates at
// most a small multiple of its size (aggregate.Snapshot.UnmarshalBinary).
func MaxSummaryFor(maxEdges int) int64 { return max(DefaultMaxSummary, int64(maxEdges)<<10) }

// Validate checks the configuration before anything starts.
func (c *Config) Validate() error {
	if len(c.URLs) == 0 && c.Self != 0 {
		return fmt.Errorf("replica index %d without replica URLs: a daemon alone is replica 0", c.Self)
	}
	if len(c.URLs) > 0 && (c.Self < 0 || c.Self >= len(c.URLs)) {
		return fmt.Errorf("replica index %d: want 0 to %d for %d replicas", c.Self, len(c.URLs)-1, len(c.URLs))
	}
	for i, u := range c.URLs {
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return fmt.Errorf("replica %d URL %q: want http://host:port", i, u)
		}
	}
	if c.Timeout < 0 || c.Wait < 0 || c.MaxSummary < 0 || c.Retention < 0 || c.KeepEvery < 0 {
		return fmt.Errorf("replica pull timeout %s, wait %s, summary bound %d, retention %s and keep interval %s: must not be negative",
			c.Timeout, c.Wait, c.MaxSummary, c.Retention, c.KeepEvery)
	}
	return nil
}

// Local is what this replica contributes: its in-memory aggregate (Aggregator.Snapshot,
// what synthesis reads without replicas), how far it read each node, and its audit evidence
// (auditor.Evidence: what it evaluated of its nodes' flows; nil serves none). All may be
// called from any goroutine.
type Local struct {
	Snapshot  func() *aggregate.Snapshot
	Positions func() (*flows.Cursor, error)
	Evidence  func() []lifecycle.Evidence
	// Store is the identity of this replica's store (aggregate.Store.Identity), served in
	// its Summary: a puller that sees it change knows the store was replaced (retire).
	Store string
	// Kept, when set, keeps the other replicas' last summaries across this replica's
	// restarts (the replica's own store). Without it a restart forgets the edges of a
	// replica that is down, and of one that left the set (--replicas lowered), for good.
	Kept SummaryStore
}

// SummaryStore is where a Set keeps the other replicas' last summaries: aggregate.Store's
// kept bucket. Kept may return some values with an error naming those it could not read.
type SummaryStore interface {
	// Keep writes all of vals at once: after a crash either all are there or none.
	Keep(vals map[string][]byte) error
	Kept() (map[string][]byte, error)
	Forget(key string) error
}

// keptPrefix starts the key of a kept summary; the replica's index follows. retiredPrefix
// starts the key of what a replica held before its store was replaced (retire).
const (
	keptPrefix    = "replica-summary-"
	retiredPrefix = "replica-retired-"
)

// keptSummary is a Summary as kept in the store: its snapshot in the binary form, and when
// it was pulled.
type keptSummary struct {
	PulledAt time.Time `json:"pulledAt"`
	Summary  Summary   `json:"summary"`
}

// StorePositions is Local.Positions for a store and the node source filling it: how far the
// store holds each node (what earlier runs committed) merged with how far this run read.
func StorePositions(store *aggregate.Store, nodes interface{ Positions() *flows.Cursor }) func() (*flows.Cursor, error) {
	return func() (*flows.Cursor, error) {
		c, err := store.Cursor()
		if err != nil {
			return nil, err
		}
		c.Merge(nodes.Positions())
		return c, nil
	}
}

// Summary is what a replica serves: its edges, its per-node read positions and its audit
// evidence.
type Summary struct {
	Replica int `json:"replica"`
	// Snapshot is the edges as JSON, served to pullers that do not ask for SummaryType. As
	// JSON a summary of 100k edges took 80 MB and about 2 s of CPU to write and read
	// (BenchmarkSummary).
	Snapshot *aggregate.Snapshot `json:"snapshot,omitempty"`
	// SnapshotBinary is the edges in aggregate.Snapshot's binary form, served for SummaryType.
	SnapshotBinary []byte `json:"snapshotBinary,omitempty"`
	// Positions is a flows.Cursor in its binary form.
	Positions []byte               `json:"positions"`
	Evidence  []lifecycle.Evidence `json:"evidence,omitempty"`
	// Store is the identity of the replica's store (Local.Store).
	Store string `json:"store,omitempty"`
	// Covers, in a retired summary (RetiredParam, or kept), is every store it merges: a
	// store replaced twice leaves one retired summary of both.
	Covers []string `json:"covers,omitempty"`
	// Copies are the summaries of other replicas this replica holds as stand-ins (their
	// replica did not answer it, or left the set), with how far each reaches: a puller whose
	// own copy reaches less asks for this one (CopyParam) instead, so that every replica
	// merges the newest one and a node that moved starts where the merge says it was read to.
	Copies []Copy `json:"copies,omitempty"`
}

// Copy names a stand-in summary a replica holds (Summary.Copies) and how far it reaches: its
// snapshot's newest flow time and flow count. Both come from the flows of its replica's
// nodes, not from any replica's wall clock, so clock offsets between replicas cannot make an
// older copy look newer.
type Copy struct {
	Replica int       `json:"replica"`
	To      time.Time `json:"to"`
	Flows   uint64    `json:"flows"`
	// Store is the store the copy was served from (Summary.Store): a copy from a newer store
	// than the one a puller holds replaces it, the one held then stands in beside it
	// (retire); a copy from an older store is not taken over a newer one.
	Store string `json:"store,omitempty"`
	// Retired says the copy is what the replica served before its store was replaced, asked
	// for with RetiredParam. Every replica takes the newest one it lacks once it knows the
	// replica serves another store (wantsRetired), the replaced replica too, so no replica's
	// merge (the leader's is the one delivered) lacks what the old store held.
	Retired bool `json:"retired,omitempty"`
	// Covers is, for a retired copy, every store it merges (Summary.Covers): one covering
	// fewer stores than the retired summary a puller holds never replaces it.
	Covers []string `json:"covers,omitempty"`
}

// reaches reports whether a copy reaching (to, flows) holds more than one reaching (oto,
// oflows): a summary only grows until its replica stops.
func reaches(to time.Time, flows uint64, oto time.Time, oflows uint64) bool {
	return to.After(oto) || to.Equal(oto) && flows > oflows
}

// CopyParam is the query parameter of SummaryPath that asks a replica for its copy of another
// replica's summary (Summary.Copies) instead of its own.
const CopyParam = "copy-of"

// RetiredParam, "true" beside CopyParam, asks for the replica's retired summary (what it
// served before its store was replaced) instead of its stand-in.
const RetiredParam = "retired"

// newerStore reports whether store identity a (aggregate.Store.Identity: the store's
// creation time, on the replica's clock) names a store created after b; false when either is
// not a time.
func newerStore(a, b string) bool {
	ta, errA := time.Parse(time.RFC3339Nano, a)
	tb, errB := time.Parse(time.RFC3339Nano, b)
	return errA == nil && errB == nil && ta.After(tb)
}

// coversOf is the stores a summary served from store and listing covers merges: covers, or
// store alone (a summary of one store, or a retired one kept by an older version).
func coversOf(store string, covers []string) []string {
	if len(covers) > 0 {
		return covers
	}
	if store == "" {
		return nil
	}
	return []string{store}
}

// retiresOnly reports whether a retired summary served from retiredStore and covering covers
// holds nothing but store: then it is an older or newer state of the same store, not a store
// replaced.
func retiresOnly(store, retiredStore string, covers []string) bool {
	return store != "" && coversAll([]string{store}, coversOf(retiredStore, covers))
}

// overlaps reports whether a and b share a store.
func overlaps(a, b []string) bool {
	return slices.ContainsFunc(a, func(st string) bool { return slices.Contains(b, st) })
}

// coversAll reports whether every store of b is in a.
func coversAll(a, b []string) bool {
	for _, st := range b {
		if !slices.Contains(a, st) {
			return false
		}
	}
	return true
}

// Set is this replica's view of the replica set: the node assignment, the summaries last
// pulled from the others, and the merge. Safe for concurrent use.
type Set struct {
	cfg    Config
	local  Local
	client *http.Client
	log    *slog.Logger
	assign *flows.Rendezvous
	m      *metrics

	// others, when set (WaitFor), says which other replicas are live.
	others func() ([]int, bool)

	// mu guards cache (the last summary pulled from each other replica, by index, or kept
	// from an earlier run), failing (the replicas whose last pull failed, for logging
	// changes only) and warm (the first Snapshot is done).
	mu    sync.Mutex
	cache map[int]*pulled
	// handoverMu serializes Handover's pull-then-reassign runs.
	handoverMu sync.Mutex
	failing    map[int]bool
	warm       bool
	// keepMu serializes writes to Local.Kept; keptAt is, by index, when the summary this
	// process last kept was pulled.
	keepMu sync.Mutex
	keptAt map[int]time.Time
	// cutoff is the retention cutoff of the last Snapshot, guarded by mu: converge takes no
	// copy that would expire whole.
	cutoff time.Time
	// retired holds, by index and guarded by mu, what a replica served before its store was
	// replaced (retire): a stand-in beside what it serves now.
	retired map[int]*pulled
}

// pulled is a summary as the puller keeps it, its cursor decoded once.
type pulled struct {
	snap     *aggregate.Snapshot
	pos      *flows.Cursor
	evidence []lifecycle.Evidence
	copies   []Copy
	store    string
	// covers, for a retired summary, is every store it merges (Summary.Covers).
	covers   []string
	pulledAt time.Time
	// kept says it was read from Local.Kept, not pulled by this process: it stands in for
	// its replica's edges and positions, and is neither waited for nor judged as this
	// sync's evidence.
	kept bool
}

// New checks cfg and returns the Set; client may be nil for a default one, log may be nil.
func New(cfg Config, local Local, client *http.Client, log *slog.Logger, reg prometheus.Registerer) (*Set, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if local.Snapshot == nil || local.Positions == nil {
		return nil, errors.New("replicas: local snapshot and positions are required")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Wait == 0 {
		cfg.Wait = DefaultWait
	}
	if cfg.MaxSummary == 0 {
		cfg.MaxSummary = DefaultMaxSummary
	}
	if cfg.KeepEvery == 0 {
		cfg.KeepEvery = DefaultKeepEvery
	}
	if client == nil {
		// One pull per replica per sync: nothing to keep alive, and a kept or spare
		// connection would hold up the other replica's HTTP shutdown.
		client = &http.Client{Transport: &http.Transport{DisableKeepAlives: true, Proxy: http.ProxyFromEnvironment}}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	assign, err := flows.NewRendezvous(strconv.Itoa(cfg.Self), flows.StaticReplicas(max(1, len(cfg.URLs))))
	if err != nil {
		return nil, err
	}
	s := &Set{
		cfg: cfg, local: local, client: client, log: log.With("replica", cfg.Self), assign: assign,
		cache: make(map[int]*pulled), failing: make(map[int]bool), keptAt: make(map[int]time.Time), retired: make(map[int]*pulled),
	}
	s.m = newMetrics(reg, s)
	if err := s.loadKept(); err != nil {
		return nil, err
	}
	return s, nil
}

// loadKept puts the summaries kept by an earlier run into the cache, where each stands in
// for its replica until that replica answers. One that cannot be read is left out (and
// replaced in the store by that replica's next summary); so is one served from this very
// store, and one of this replica's own index (the store served another index before), as
// merging it would count this replica's own edges twice, unless it is the retired summary of
// the store this one replaced. A daemon alone (no URLs) takes every other one: a replica
// never keeps its own summary, so each is another's.
func (s *Set) loadKept() error {
	if s.local.Kept == nil {
		return nil
	}
	entries, err := readKept(s.local.Kept, s.log)
	if err != nil {
		return err
	}
	var loaded, departed []int
	edges := 0
	for _, e := range entries {
		i := e.replica
		if s.local.Store != "" && slices.Contains(coversOf(e.p.store, e.p.covers), s.local.Store) {
			s.log.Warn("kept summary of this very store left out: merging it would count its edges twice", "peer", i, "retired", e.retired)
			continue
		}
		// A retired summary of this replica's own index is what its store held before this
		// one replaced it (taken from another replica, converge).
		if i == s.cfg.Self && len(s.cfg.URLs) > 0 && !(e.retired && e.p.store != "" && s.local.Store != "") {
			s.log.Warn("kept summary of this replica's own index left out: the store was another replica's", "peer", i, "retired", e.retired)
			continue
		}
		edges += e.p.snap.EdgeCount()
		if e.retired {
			s.retired[i] = e.p
			continue
		}
		s.cache[i] = e.p
		loaded = append(loaded, i)
		if i >= len(s.cfg.URLs) {
			departed = append(departed, i)
		}
	}
	for i, r := range s.retired {
		c := s.cache[i]
		if c == nil {
			continue
		}
		// One store kept both as the replica's and as retired (left by an earlier version):
		// merging both would count it twice. The one reaching further stands in; the retired
		// key is removed once the replica's reaches as far (until then each start chooses
		// the same).
		switch keptTwice(c.store, c.snap, r.store, r.covers, r.snap, s.cfg.Retention) {
		case twiceRetiredFurther:
			delete(s.retired, i)
			s.log.Warn("one summary of a replica left out: its store is kept both as the replica's and as retired", "peer", i, "store", c.store)
			s.cache[i] = &pulled{snap: r.snap, pos: r.pos, store: c.store, pulledAt: r.pulledAt, kept: true}
		case twiceKeptFurther:
			delete(s.retired, i)
			s.log.Warn("one summary of a replica left out: its store is kept both as the replica's and as retired", "peer", i, "store", c.store)
			if err := s.local.Kept.Forget(retiredKey(i)); err != nil {
				s.log.Warn("retired summary not removed from the store", "peer", i, "err", err)
			}
		case twiceMerged:
			s.log.Warn("a replica's store is kept both as its summary and within its retired one: that store's edges are counted twice (counts only, the edges are right)",
				"peer", i, "store", c.store, "covers", coversOf(r.store, r.covers))
		}
	}
	if len(loaded) > 0 {
		s.log.Info("kept summaries of other replicas stand in until each answers", "replicas", loaded, "edges", edges,
			"left the set", departed)
	}
	return nil
}

// HasKept reports whether k holds a summary a Set kept: a daemon started alone (--replicas
// 1) on the store of a replica of a larger set then still merges the others' last summaries.
// Values that fail their checksum are logged and left out; an error is a store that could not
// be read at all.
func HasKept(k SummaryStore, log *slog.Logger) (bool, error) {
	vals, err := k.Kept()
	if vals == nil && err != nil {
		return false, fmt.Errorf("replicas: kept summaries: %w", err)
	}
	if err != nil && log != nil {
		log.Warn("kept replica summaries left out: they do not stand in", "err", err)
	}
	for key := range vals {
		_, kept := keptIndex(key)
		_, retired := indexAfter(key, retiredPrefix)
		if kept || retired {
			return true, nil
		}
	}
	return false, nil
}

// StandIns is the number of summaries in the merge that their replica did not serve to this
// process: kept by an earlier run for a replica that has not answered since, or for one that
// left the set, and the retired summaries of replaced stores (of this replica's own too).
func (s *Set) StandIns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.retired)
	for i, p := range s.cache {
		if p.kept || i >= len(s.cfg.URLs) {
			n++
		}
	}
	return n
}

func keptKey(i int) string { return keptPrefix + strconv.Itoa(i) }

func retiredKey(i int) string { return retiredPrefix + strconv.Itoa(i) }

func keptIndex(key string) (int, bool) { return indexAfter(key, keptPrefix) }

func indexAfter(key, prefix string) (int, bool) {
	rest, ok := strings.CutPrefix(key, prefix)
	if !ok {
		return 0, false
	}
	i, err := strconv.Atoi(rest)
	return i, err == nil && i >= 0 && strconv.Itoa(i) == rest
}

// WaitFor makes the first Snapshot wait only for the other replicas others reports live
// (Membership.Others): one whose Lease expired is dead or cut off, will not answer within
// Wait, and its nodes go to the live replicas anyway, which serve where they read them to.
// Until others reports a first look (false), every replica is waited for. Call it before the
// first Snapshot.
func (s *Set) WaitFor(others func() ([]int, bool)) { s.others = others }

// Assignment is the nodes this replica reads (flows.NodesConfig.Assignment).
func (s *Set) Assignment() *flows.Rendezvous { return s.assign }

// Handler serves this replica's Summary at SummaryPath: as JSON, its snapshot in the binary
// form to a puller that asks for SummaryType, in the JSON form to any other. With CopyParam
// it serves its copy of that replica's summary (Summary.Copies), 404 when it holds none.
func (s *Set) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var sum Summary
		var snap *aggregate.Snapshot
		if of := r.URL.Query().Get(CopyParam); of != "" {
			i, err := strconv.Atoi(of)
			var pos *flows.Cursor
			s.mu.Lock()
			p, ok := s.cache[i]
			ok = ok && s.standsIn(i, p)
			if r.URL.Query().Get(RetiredParam) == "true" {
				p, ok = s.retired[i]
			}
			if ok = ok && err == nil; ok {
				// Snapshot replaces p.snap (expiry) under mu: read what is served under it.
				sum.Replica, sum.Store, sum.Covers, sum.Evidence, snap, pos = i, p.store, p.covers, p.evidence, p.snap, p.pos
			}
			s.mu.Unlock()
			if !ok {
				http.Error(w, "no stand-in summary of replica "+of, http.StatusNotFound)
				return
			}
			if sum.Positions, err = pos.MarshalBinary(); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
		} else {
			cur, err := s.local.Positions()
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			if sum.Positions, err = cur.MarshalBinary(); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			sum.Replica, sum.Store, sum.Copies, snap = s.cfg.Self, s.local.Store, s.copies(), s.local.Snapshot()
			if s.local.Evidence != nil {
				sum.Evidence = s.local.Evidence()
			}
		}
		contentType := "application/json"
		if acceptsBinary(r) {
			var err error
			if sum.SnapshotBinary, err = snap.MarshalBinary(); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			contentType = SummaryType
		} else {
			sum.Snapshot = snap
		}
		w.Header().Set("Content-Type", contentType)
		w.Header().Set("Vary", "Accept")
		if err := json.NewEncoder(w).Encode(sum); err != nil {
			s.log.Debug("write replica summary", "err", err)
		}
	})
}

// copies lists the stand-ins this replica holds, for Summary.Copies.
func (s *Set) copies() []Copy {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Copy
	for _, i := range slices.Sorted(maps.Keys(s.cache)) {
		if p := s.cache[i]; s.standsIn(i, p) {
			out = append(out, Copy{Replica: i, To: p.snap.To, Flows: p.snap.Flows, Store: p.store})
		}
	}
	for _, i := range slices.Sorted(maps.Keys(s.retired)) {
		p := s.retired[i]
		out = append(out, Copy{Replica: i, To: p.snap.To, Flows: p.snap.Flows, Store: p.store, Retired: true, Covers: p.covers})
	}
	return out
}

// acceptsBinary reports whether the request's Accept header names SummaryType, with a
// quality above 0 (RFC 9110, section 12.5.1: q=0 means "not acceptable").
func acceptsBinary(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept") {
		for part := range strings.SplitSeq(v, ",") {
			mt, params, _ := strings.Cut(part, ";")
			if !strings.EqualFold(strings.TrimSpace(mt), SummaryType) {
				continue
			}
			for p := range strings.SplitSeq(params, ";") {
				if k, q, ok := strings.Cut(strings.TrimSpace(p), "="); ok && strings.EqualFold(k, "q") {
					if f, err := strconv.ParseFloat(strings.TrimSpace(q), 64); err == nil && f <= 0 {
						return false
					}
				}
			}
			return true
		}
	}
	return false
}

// Snapshot pulls every other replica's summary and returns the merge of them all with this
// replica's own: the snapshot the sync loop synthesizes from (daemon.Deps.Snapshot). A
// replica that does not answer contributes the summary it last served, or the one kept in
// the store by an earlier run (Local.Kept); so does one that left the set. Such a stand-in's
// edges expire by Retention as its replica would have expired them, and a stand-in left
// with no edge and no workload is dropped. One never reached contributes nothing, and the
// pull is retried on the next call.
func (s *Set) Snapshot(ctx context.Context) *aggregate.Snapshot {
	s.pullAll(ctx, false)
	s.mu.Lock()
	warm := s.warm
	s.warm = true
	s.mu.Unlock()
	if !warm {
		s.awaitAll(ctx)
	}
	local := s.local.Snapshot()
	var cutoff time.Time
	if s.cfg.Retention > 0 && !local.To.IsZero() {
		cutoff = local.To.Add(-s.cfg.Retention)
	}
	snaps := []*aggregate.Snapshot{local}
	expired := map[int]time.Time{} // index -> when the expired stand-in was pulled
	s.mu.Lock()
	s.cutoff = cutoff
	for _, i := range slices.Sorted(maps.Keys(s.cache)) {
		p := s.cache[i]
		if !cutoff.IsZero() && s.standsIn(i, p) {
			// An empty stand-in beside a retired summary stays: it says which store the
			// replica serves, and a replica that starts afresh takes the retired copy only
			// once it holds a copy of it (wantsRetired).
			if p.snap = p.snap.Expired(cutoff); p.snap.EdgeCount() == 0 && len(p.snap.Workloads) == 0 && s.retired[i] == nil {
				delete(s.cache, i)
				expired[i] = p.pulledAt
				continue
			}
		}
		snaps = append(snaps, p.snap)
	}
	var retiredExpired []int
	for _, i := range slices.Sorted(maps.Keys(s.retired)) {
		p := s.retired[i]
		if !cutoff.IsZero() {
			if p.snap = p.snap.Expired(cutoff); p.snap.EdgeCount() == 0 && len(p.snap.Workloads) == 0 {
				delete(s.retired, i)
				retiredExpired = append(retiredExpired, i)
				continue
			}
		}
		snaps = append(snaps, p.snap)
	}
	s.mu.Unlock()
	for _, i := range retiredExpired {
		s.log.Info("what a replica held before its store was replaced expired", "peer", i, "retention", s.cfg.Retention)
		if s.local.Kept != nil {
			s.keepMu.Lock()
			// One retired or copied since (under keepMu, as here) is kept in its place: it stays.
			s.mu.Lock()
			_, since := s.retired[i]
			s.mu.Unlock()
			if !since {
				if err := s.local.Kept.Forget(retiredKey(i)); err != nil {
					s.log.Warn("expired retired summary not removed from the store", "peer", i, "err", err)
				}
			}
			s.keepMu.Unlock()
		}
	}
	for i, at := range expired {
		s.log.Info("stand-in summary of a replica expired: every edge it held is older than the retention", "peer", i, "retention", s.cfg.Retention)
		if s.local.Kept != nil {
			s.keepMu.Lock()
			// A summary kept since (a pull or a copy while this ran) is newer: it stays.
			if last, ok := s.keptAt[i]; !ok || !last.After(at) {
				if err := s.local.Kept.Forget(keptKey(i)); err != nil {
					s.log.Warn("expired replica summary not removed from the store", "peer", i, "err", err)
				}
				delete(s.keptAt, i)
			}
			s.keepMu.Unlock()
		}
	}
	return aggregate.Merge(snaps...)
}

// standsIn reports whether p is merged for a replica that did not serve it in its last
// pull: kept from an earlier run, its replica failing, or its replica out of the set. The
// caller holds mu.
func (s *Set) standsIn(i int, p *pulled) bool {
	return p.kept || s.failing[i] || i >= len(s.cfg.URLs)
}

// Peers returns the other replicas' audit evidence for the lifecycle to merge
// (lifecycle.Machine.MergePeers): one entry per other member of the set (all of them with
// static membership, the live ones with Leases), Pulled when its last pull (the Snapshot of
// this sync) answered. A member that did not answer is listed with its last evidence and
// Pulled false, so nothing is promoted on a window it may have seen broken. A replica whose
// Lease expired is no member: its nodes are read, and audited, by the others. While this
// replica is no member itself (before its first look at the Leases, or cut off from the API
// server) it cannot tell who reads which node, so every replica of the set counts.
func (s *Set) Peers() []lifecycle.Peer {
	members := s.assign.Members()
	if !slices.Contains(members, strconv.Itoa(s.cfg.Self)) {
		members = flows.StaticReplicas(max(1, len(s.cfg.URLs)))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]lifecycle.Peer, 0, len(members))
	for _, m := range members {
		i, err := strconv.Atoi(m)
		if err != nil || i == s.cfg.Self {
			continue
		}
		p := lifecycle.Peer{Replica: m}
		if c, ok := s.cache[i]; ok {
			p.Evidence, p.Pulled = c.evidence, !s.failing[i] && !c.kept
		}
		out = append(out, p)
	}
	return out
}

// Handover returns what a Membership runs after the live set changed (NewMembership's
// onChange). It releases at once the nodes this replica no longer owns (the node source's
// Release: the Membership's timing, which keeps two replicas from reading one node, counts
// from now). Then it pulls every other replica's summary again and reassigns (Reassign), so
// that a node moving here starts where its previous owner read it to, not as of the last
// sync's pull: a replica that stops cleanly still serves its summary while its Lease is
// released. The pull (bounded by Timeout) and the reassign run on their own goroutine, one
// change after the other, so the Lease renewals never wait for a replica that does not
// answer.
func (s *Set) Handover(release, reassign func()) func() {
	return func() {
		release()
		go func() {
			s.handoverMu.Lock()
			defer s.handoverMu.Unlock()
			s.pullAll(context.Background(), true)
			reassign()
		}()
	}
}

// Positions is how far the other replicas' summaries this replica holds say each node was
// read: for a daemon alone whose source reads every node from its oldest flow (a relay, a
// recording), what its Ingester drops (aggregate.IngesterConfig.ReadElsewhere), as those
// flows are in the stand-ins already.
func (s *Set) Positions() *flows.Cursor {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := flows.NewCursor()
	for _, p := range s.cache {
		out.Merge(p.pos)
	}
	for _, p := range s.retired {
		out.Merge(p.pos)
	}
	return out
}

// Start is where this replica starts reading node (flows.NodesConfig.Start): the furthest
// any other replica's last summary says it was read, nil when none read it.
func (s *Set) Start(node string) *flows.Cursor {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out *flows.Cursor
	for _, p := range append(slices.Collect(maps.Values(s.cache)), slices.Collect(maps.Values(s.retired))...) {
		if c := p.pos.Node(node); c.Len() > 0 {
			if out == nil {
				out = flows.NewCursor()
			}
			out.Merge(c)
		}
	}
	return out
}

// awaitAll pulls the replicas never pulled again until each one waited for (missing)
// answered once, Wait passed or ctx ended.
func (s *Set) awaitAll(ctx context.Context) {
	deadline := time.Now().Add(s.cfg.Wait)
	for {
		missing := s.missing()
		if len(missing) == 0 {
			return
		}
		if !time.Now().Before(deadline) {
			s.log.Warn("replicas never answered: nodes that moved from them are read from their oldest flow", "replicas", missing, "waited", s.cfg.Wait)
			return
		}
		t := time.NewTimer(retryEvery)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		s.pullAll(ctx, false)
	}
}

// missing returns the other replicas waited for that no summary was pulled from yet by this
// process (one kept from an earlier run is older than what the replica serves now): all of
// them, or with WaitFor once it looked, the live ones.
func (s *Set) missing() []int {
	var wait []int
	all := true
	if s.others != nil {
		if live, looked := s.others(); looked {
			wait, all = live, false
		}
	}
	if all {
		for i := range s.cfg.URLs {
			wait = append(wait, i)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []int
	for _, i := range wait {
		if p, ok := s.cache[i]; (!ok || p.kept) && i != s.cfg.Self && i >= 0 && i < len(s.cfg.URLs) {
			out = append(out, i)
		}
	}
	return out
}

// pullAll pulls every other replica at once, each bounded by the timeout, and keeps what it
// pulled in the store when due (take); handover says the live set just changed. Then it
// takes the newer copies the others hold of the replicas it has only a stand-in for
// (converge). The keeps are written before it returns: a sync waits for them every
// KeepEvery, a handover for its own.
func (s *Set) pullAll(ctx context.Context, handover bool) {
	var wg sync.WaitGroup
	for i := range s.cfg.URLs {
		if i == s.cfg.Self {
			continue
		}
		wg.Go(func() {
			p, sum, err := s.pull(ctx, i, i, false)
			if err != nil {
				s.recordFailure(i, err)
				return
			}
			s.take(i, p, sum, handover)
		})
	}
	wg.Wait()
	s.converge(ctx)
}

// take makes p, just pulled from replica i itself, what this replica holds of it, retiring
// what it held before when p comes from another store (retire), and keeps it in the store
// when due (keep): the retired summary and p in one write, so a crash between the two
// cannot leave the old summary under both keys, standing in twice after a restart. keepMu
// is held throughout: two pulls of one replica at once (a handover's and a sync's) neither
// retire one summary twice nor keep an older summary over a newer one.
func (s *Set) take(i int, p *pulled, sum *Summary, handover bool) {
	s.keepMu.Lock()
	defer s.keepMu.Unlock()
	s.mu.Lock()
	s.m.pulls.WithLabelValues("ok").Inc()
	if s.failing[i] {
		s.log.Info("replica summary pulled again", "peer", i)
	}
	delete(s.failing, i)
	prev := s.cache[i]
	if prev != nil && !prev.kept && p.pulledAt.Before(prev.pulledAt) {
		s.mu.Unlock()
		return // a newer pull of this replica was taken meanwhile
	}
	r, dropped := s.retire(i, prev, p)
	s.cache[i] = p
	// Copies taken under mu: Snapshot replaces a held summary's snapshot (expiry) under it.
	mine := *p
	var retired *pulled
	if r != nil {
		rc := *r
		retired = &rc
	}
	s.mu.Unlock()
	s.keepWith(i, &mine, sum, handover, retired, dropped)
}

// keepWith keeps p, the summary of replica i now held, and what it retired (nil: nothing)
// in one write. A summary that retired another is written whatever was kept of i before,
// even if that was pulled later (a copy of the retired store): the old store must not stay
// under both keys. With dropped (retire dropped the retired summary of i, p's store come
// back), p is written first and the retired summary then forgotten: a crash between the two
// leaves one store kept twice, which loadKept resolves. The caller holds keepMu and passes
// copies taken under mu.
func (s *Set) keepWith(i int, p *pulled, sum *Summary, force bool, retired *pulled, dropped bool) {
	vals := map[string][]byte{}
	if retired != nil {
		if err := s.retiredValue(i, retired, vals); err != nil {
			s.keepFailed(i, err)
		}
	}
	replace := retired != nil || dropped
	if !s.writeKept(i, p, sum, force || replace, replace, vals) || !dropped {
		return
	}
	if err := s.local.Kept.Forget(retiredKey(i)); err != nil {
		s.log.Warn("retired summary not removed from the store", "peer", i, "err", err)
	}
}

// retire returns what replica i held before, prev, when p, to replace it, comes from another
// store (Summary.Store): the replica's store was replaced, a lost volume for example.
// Without this, the new store's summary would replace the old one and every edge only the
// old store held would be gone from the proposals. The old summary stands in beside the new
// one (merged with an earlier retired one) in s.retired, kept in the store, until its edges
// expire. What the replica reads again from Hubble's buffer after the loss is counted in both
// (counts only: the edges are right).
//
// A replica can come back to a store it was retired from (A, B, then A again: a volume
// reattached). What was retired of A is then an older state of what A serves now, dropped
// (superseded; dropped says so when nothing is retired in its place), but only if what
// replaces it holds every edge it held (holdsAll): a store restored from a backup taken
// before the loss has its original's identity and lacks what it learned after the backup,
// so the retired state stays beside it (counted twice, no edge lost). The caller holds
// keepMu and mu.
func (s *Set) retire(i int, prev, p *pulled) (r *pulled, dropped bool) {
	old := s.retired[i]
	if prev == nil {
		// Nothing held of i but, perhaps, what was retired (kept by an earlier run, or
		// copied): p may be a store come back.
		return nil, old != nil && p.store != "" && s.cameBack(i, old, p)
	}
	if prev.store == "" || p.store == "" || p.store == prev.store {
		return nil, false
	}
	r = &pulled{snap: prev.snap, pos: prev.pos.Clone(), pulledAt: prev.pulledAt, store: prev.store, kept: true,
		covers: []string{prev.store}}
	if old != nil {
		held := coversOf(old.store, old.covers)
		if coversAll([]string{prev.store, p.store}, held) && s.holdsAll(old, prev, p) {
			// What was retired is an older state of the store retired now, or of the one
			// served now (a store that came back): prev and p hold all of it.
			s.log.Info("retired summary of a replica superseded: the store it held is served or retired again", "peer", i, "covers", held)
		} else {
			if slices.Contains(held, prev.store) || slices.Contains(held, p.store) {
				s.log.Warn("a replica came back to a store it was retired from, holding less than it held then (restored from a backup?) or merged with another store: that store's older flows are counted twice (counts only, the edges are right)",
					"peer", i, "store", p.store, "covers", held)
			}
			r = combineRetired(old, r)
		}
	}
	s.retired[i] = r
	s.m.retired.Inc()
	s.log.Warn("replica serves the summary of another store: its store was replaced (a lost volume); what it held before stands in",
		"peer", i, "store", p.store, "before", prev.store, "edges before", prev.snap.EdgeCount())
	return r, false
}

// cameBack drops old, the retired summary of replica i, when p, the first summary this
// process holds of i, comes from the one store old holds and holds every edge of it: p's
// store came back, and old is an older state of it. It reports whether old was dropped. One
// that merges other stores too cannot be split, and one p lacks edges of is kept (counted
// twice, no edge lost). The caller holds mu.
func (s *Set) cameBack(i int, old, p *pulled) bool {
	held := coversOf(old.store, old.covers)
	if !slices.Contains(held, p.store) {
		return false
	}
	if retiresOnly(p.store, old.store, old.covers) && s.holdsAll(old, p) {
		delete(s.retired, i)
		s.log.Info("retired summary of a replica superseded: the store it held is served again", "peer", i, "store", p.store)
		return true
	}
	s.log.Warn("a replica serves a store it was retired from, holding less than it held then (restored from a backup?) or merged with another store: that store's older flows are counted twice (counts only, the edges are right)",
		"peer", i, "store", p.store, "covers", held)
	return false
}

// holdsAll reports whether now, what replaces old, holds every edge of old that the
// retention keeps (holdsEdges): old is then an older state of now's stores, and dropping it
// loses no edge.
func (s *Set) holdsAll(old *pulled, now ...*pulled) bool {
	snaps := make([]*aggregate.Snapshot, len(now))
	for n, p := range now {
		snaps[n] = p.snap
	}
	return holdsEdges(aggregate.Merge(snaps...), old.snap, s.cfg.Retention)
}

// combines reports whether the retired copy c covers only other stores than held, a retired
// summary of the same replica (nil: none): then the two are combined, not one taken for the
// other.
func combines(c Copy, held *pulled) bool {
	return held != nil && !overlaps(coversOf(c.Store, c.Covers), coversOf(held.store, held.covers))
}

// combineRetired merges two retired summaries of one replica that cover different stores.
func combineRetired(a, b *pulled) *pulled {
	r := &pulled{snap: aggregate.Merge(a.snap, b.snap), pos: a.pos.Clone(), store: b.store, pulledAt: b.pulledAt, kept: true}
	r.pos.Merge(b.pos)
	if newerStore(a.store, b.store) {
		r.store = a.store
	}
	if a.pulledAt.After(b.pulledAt) {
		r.pulledAt = a.pulledAt
	}
	r.covers = slices.Clone(coversOf(a.store, a.covers))
	for _, st := range coversOf(b.store, b.covers) {
		if !slices.Contains(r.covers, st) {
			r.covers = append(r.covers, st)
		}
	}
	return r
}

// retiredValue adds the retired summary r of replica i to vals, to be kept in the store.
func (s *Set) retiredValue(i int, r *pulled, vals map[string][]byte) error {
	if s.local.Kept == nil {
		return nil
	}
	bin, err := r.snap.MarshalBinary()
	if err != nil {
		return err
	}
	pos, err := r.pos.MarshalBinary()
	if err != nil {
		return err
	}
	b, err := json.Marshal(keptSummary{PulledAt: r.pulledAt, Summary: Summary{Replica: i, SnapshotBinary: bin, Positions: pos, Store: r.store, Covers: r.covers}})
	if err != nil {
		return err
	}
	vals[retiredKey(i)] = b
	return nil
}

// converge replaces each stand-in this replica holds by the newest copy another replica
// answered it listing (Summary.Copies), and takes a copy of a replica it holds nothing of.
// Each replica keeping its own copy of a replica that is gone, on its own schedule, would
// otherwise merge a different one: a node of the departed replica is read by its new owner
// from where the owner's copy says, and a replica whose copy is older would miss what lies
// between the two copies for good. A copy from a newer store than the one held retires the
// held one (retire), and one from an older store is not taken. It takes the newest retired
// summary it lacks as well (Copy.Retired), of its own index too. A copy taken is kept at
// once.
func (s *Set) converge(ctx context.Context) {
	type source struct {
		from int
		c    Copy
		// left is the retired copy of the same replica its holder lists, back that c is a
		// store that came back by that word (cameBack).
		left *Copy
		back bool
	}
	newest := map[int]source{}
	var candidates []source // retired copies
	s.mu.Lock()
	for from, p := range s.cache {
		if s.standsIn(from, p) {
			continue // only what a replica answered this process lists its copies
		}
		for _, c := range p.copies {
			if c.Replica < 0 || c.Replica == from && !c.Retired {
				continue // a replica's retired summary of itself is handed on too
			}
			if !s.cutoff.IsZero() && c.To.Before(s.cutoff) {
				continue // every edge of it is older than the retention: it would expire whole
			}
			if c.Retired {
				candidates = append(candidates, source{from: from, c: c})
				continue
			}
			var left *Copy
			if n := slices.IndexFunc(p.copies, func(r Copy) bool { return r.Retired && r.Replica == c.Replica }); n >= 0 {
				left = &p.copies[n]
			}
			if c.Replica == s.cfg.Self || !s.wantsCopy(c, left) {
				continue
			}
			back := s.cameBackIn(c, left)
			if b, ok := newest[c.Replica]; ok && (b.back && !back || b.back == back && !copyBefore(b.c, c)) {
				continue
			}
			newest[c.Replica] = source{from: from, c: c, left: left, back: back}
		}
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for of, src := range newest {
		wg.Go(func() { s.takeCopy(ctx, src.from, of, false, src.left) })
	}
	wg.Wait()
	// Retired copies are chosen once the stand-in copies are taken: whether one is wanted
	// depends on the store its replica is known to serve (wantsRetired).
	retired := map[int]source{}
	s.mu.Lock()
	for _, src := range candidates {
		c := src.c
		if !s.wantsRetired(c) {
			continue
		}
		if b, ok := retired[c.Replica]; ok && !reaches(c.To, c.Flows, b.c.To, b.c.Flows) {
			continue
		}
		retired[c.Replica] = src
	}
	s.mu.Unlock()
	for of, src := range retired {
		wg.Go(func() { s.takeCopy(ctx, src.from, of, true, nil) })
	}
	wg.Wait()
}

// wantsCopy reports whether c, a stand-in copy of another replica, is worth taking over what
// this replica holds of that replica: nothing, or a stand-in of an older store, or of the
// same store reaching less, or a store that came back (cameBackIn; left is the retired copy
// of that replica c's holder lists, nil: none). The caller holds mu.
func (s *Set) wantsCopy(c Copy, left *Copy) bool {
	if c.Store != "" && c.Store == s.local.Store {
		return false // this replica's own store: its edges are the local ones
	}
	mine, ok := s.cache[c.Replica]
	if ok && !s.standsIn(c.Replica, mine) {
		return false // what the replica answered is newer than any copy
	}
	if s.cameBackIn(c, left) {
		return true
	}
	if r := s.retired[c.Replica]; r != nil && r.store != "" && c.Store != "" &&
		(slices.Contains(r.covers, c.Store) || !newerStore(c.Store, r.store)) {
		return false // a store known replaced: its edges stand in as retired already
	}
	if !ok {
		return true
	}
	if mine.store != "" && c.Store != "" && mine.store != c.Store {
		return newerStore(c.Store, mine.store)
	}
	return reaches(c.To, c.Flows, mine.snap.To, mine.snap.Flows)
}

// cameBackIn reports whether c, a stand-in copy of another replica from a store this replica
// retired, is that store come back (A, B, then A) by the word of c's holder: the retired copy
// it lists beside c (left) holds the store of the stand-in this replica holds (B) and not
// c's, and reaches further than what this replica retired of c's store, so the holder saw B
// left after this replica saw A left. Store identities cannot order a store that came back,
// and without this a replica that saw only A replaced would hold on to B for good. Taking c
// retires B and supersedes the older A (retire). The caller holds mu.
func (s *Set) cameBackIn(c Copy, left *Copy) bool {
	mine, ok := s.cache[c.Replica]
	r := s.retired[c.Replica]
	if left == nil || !ok || r == nil || mine.store == "" || c.Store == "" || mine.store == c.Store ||
		!slices.Contains(coversOf(r.store, r.covers), c.Store) {
		return false
	}
	gone := coversOf(left.Store, left.Covers)
	return slices.Contains(gone, mine.store) && !slices.Contains(gone, c.Store) && left.To.After(r.snap.To)
}

// copyBefore orders two candidate copies of one replica: a newer store first, then the one
// reaching further.
func copyBefore(a, b Copy) bool {
	if a.Store != "" && b.Store != "" && a.Store != b.Store {
		return newerStore(b.Store, a.Store)
	}
	return reaches(b.To, b.Flows, a.To, a.Flows)
}

// wantsRetired reports whether c, a retired copy (what replica c.Replica served before its
// store was replaced), is worth taking: the replica is known to serve another store now than
// any c covers (for this replica's own index, its own store is none of them), and this
// replica holds no retired summary of it, or one whose stores c covers all and reaches less
// (or covers fewer), or one covering other stores only (the two are combined). A puller
// that still holds one of the old stores' summaries as its replica's takes none: it retires
// that one itself when it sees the new store, and taking both would count the old store
// twice. Nor does one holding nothing of the replica: the store the replica serves might be
// one c covers (a store that came back), and a retired copy combined with another cannot be
// split again when the replica answers from it. It takes the copy once it holds the
// replica's summary, or a stand-in copy of it (converge takes those first). The caller
// holds mu.
func (s *Set) wantsRetired(c Copy) bool {
	covers := coversOf(c.Store, c.Covers)
	if len(covers) == 0 || s.local.Store != "" && slices.Contains(covers, s.local.Store) {
		return false
	}
	if c.Replica == s.cfg.Self {
		if s.local.Store == "" {
			return false
		}
	} else if now, ok := s.cache[c.Replica]; !ok || now.store == "" || slices.Contains(covers, now.store) {
		return false
	}
	mine, ok := s.retired[c.Replica]
	if !ok {
		return true
	}
	held := coversOf(mine.store, mine.covers)
	if combines(c, mine) {
		return true // other stores than the one held: the two are combined (combineRetired)
	}
	if !coversAll(covers, held) {
		return false // it lacks a store the one held merges, and merging would count some twice
	}
	return len(covers) > len(held) || reaches(c.To, c.Flows, mine.snap.To, mine.snap.Flows)
}

// takeCopy pulls replica from's copy of replica of's summary (its retired one with retired)
// and, if it is still wanted when it arrives (left as wantsCopy takes it), takes it and keeps
// it at once.
func (s *Set) takeCopy(ctx context.Context, from, of int, retired bool, left *Copy) {
	p, sum, err := s.pull(ctx, from, of, retired)
	if err != nil {
		s.log.Warn("newer copy of a replica's summary not pulled: this replica's own stands in", "peer", of, "from", from, "retired", retired, "err", err)
		return
	}
	p.kept = true // not served by its replica: a stand-in, as one kept is
	c := Copy{Replica: of, To: p.snap.To, Flows: p.snap.Flows, Store: p.store, Retired: retired, Covers: p.covers}
	s.keepMu.Lock()
	defer s.keepMu.Unlock()
	s.mu.Lock()
	// Copies taken under mu: Snapshot replaces a held summary's snapshot (expiry) under it.
	mine := *p
	switch {
	case retired && s.wantsRetired(c):
		if held := s.retired[of]; held != nil && (combines(c, held) || !s.holdsAll(held, p)) {
			if !combines(c, held) {
				// A copy covering more stores but lacking edges of the one held (an older
				// state of a store they share): combined, so no edge is lost.
				s.log.Warn("a retired copy of a replica lacks edges of the retired summary held: both are merged, the stores they share counted twice (counts only, the edges are right)",
					"peer", of, "from", from, "covers", coversOf(c.Store, c.Covers), "held", coversOf(held.store, held.covers))
			}
			p = combineRetired(held, p)
			mine = *p
		}
		s.retired[of] = p
		s.mu.Unlock()
		s.log.Info("newer copy of what a replica held before its store was replaced taken from another replica", "peer", of, "from", from, "to", mine.snap.To, "flows", mine.snap.Flows)
		vals := map[string][]byte{}
		if err := s.retiredValue(of, &mine, vals); err != nil {
			s.keepFailed(of, err)
			return
		}
		s.writeKept(of, nil, nil, true, false, vals)
	case !retired && of != s.cfg.Self && s.wantsCopy(c, left):
		var rc *pulled
		r, dropped := s.retire(of, s.cache[of], p)
		if r != nil {
			cp := *r
			rc = &cp
		}
		s.cache[of] = p
		s.mu.Unlock()
		s.log.Info("newer copy of a replica's summary taken from another replica", "peer", of, "from", from, "to", mine.snap.To, "flows", mine.snap.Flows)
		s.keepWith(of, &mine, sum, true, rc, dropped)
	default:
		s.mu.Unlock()
	}
}

// writeKept writes vals and, when due, the summary p of replica i to Local.Kept in one
// write: the first of each replica this process pulls, one pulled after the live set changed
// or copied from another replica (force), and otherwise one every KeepEvery; p nil writes
// vals alone. It runs outside mu, so a slow disk holds up no Peers or Start; the caller holds
// keepMu, which keeps an older summary from replacing a newer one, unless replace says p
// replaces what was kept whatever its time (it retired it). It reports whether p was written.
func (s *Set) writeKept(i int, p *pulled, sum *Summary, force, replace bool, vals map[string][]byte) bool {
	if s.local.Kept == nil {
		return false
	}
	if p != nil {
		last, kept := s.keptAt[i]
		if replace || !p.pulledAt.Before(last) && (force || !kept || p.pulledAt.Sub(last) >= s.cfg.KeepEvery) {
			k := keptSummary{PulledAt: p.pulledAt, Summary: *sum}
			k.Summary.Snapshot, k.Summary.Copies = nil, nil
			var err error
			if k.Summary.SnapshotBinary == nil { // served as JSON, by an older replica
				k.Summary.SnapshotBinary, err = p.snap.MarshalBinary()
			}
			var b []byte
			if err == nil {
				b, err = json.Marshal(k)
			}
			if err != nil {
				s.keepFailed(i, err)
				p = nil
			} else {
				vals[keptKey(i)] = b
			}
		} else {
			p = nil
		}
	}
	if len(vals) == 0 {
		return false
	}
	if err := s.local.Kept.Keep(vals); err != nil {
		s.keepFailed(i, err)
		return false
	}
	s.m.keeps.WithLabelValues("ok").Inc()
	if p == nil {
		return false
	}
	s.keptAt[i] = p.pulledAt
	return true
}

// keepFailed counts and logs a summary of replica i that could not be kept in the store.
func (s *Set) keepFailed(i int, err error) {
	s.m.keeps.WithLabelValues("error").Inc()
	s.log.Warn("replica summary not kept in the store: a restart of this replica would forget its edges while it is down", "peer", i, "err", err)
}

// recordFailure notes a failed pull of replica i: its last summary stays in the merge.
func (s *Set) recordFailure(i int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m.pulls.WithLabelValues("error").Inc()
	if !s.failing[i] {
		_, cached := s.cache[i]
		s.log.Warn("replica summary not pulled: its last one stays in the merge", "peer", i, "url", s.cfg.URLs[i], "err", err, "cached", cached)
	}
	s.failing[i] = true
}

// pull fetches replica from's summary, or with of another index its copy of that replica's
// (CopyParam; with retired, its retired one, RetiredParam), and decodes it; the Summary is
// returned as read, for writeKept.
func (s *Set) pull(ctx context.Context, from, of int, retired bool) (*pulled, *Summary, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	u := strings.TrimSuffix(s.cfg.URLs[from], "/") + SummaryPath
	if of != from || retired {
		q := url.Values{CopyParam: {strconv.Itoa(of)}}
		if retired {
			q.Set(RetiredParam, "true")
		}
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Accept", SummaryType+", application/json;q=0.5")
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	body := &countingReader{r: io.LimitReader(resp.Body, s.cfg.MaxSummary+1)}
	var sum Summary
	err = json.NewDecoder(body).Decode(&sum)
	s.m.pulledBytes.Add(float64(body.n))
	if body.n > s.cfg.MaxSummary {
		return nil, nil, fmt.Errorf("GET %s: summary larger than %d bytes", u, s.cfg.MaxSummary)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("GET %s: decode summary: %w", u, err)
	}
	p, err := decodeSummary(&sum, of)
	if err != nil {
		return nil, nil, fmt.Errorf("GET %s: %w", u, err)
	}
	p.pulledAt = time.Now()
	return p, &sum, nil
}

// decodeSummary checks a summary that replica i served (or that was kept from it) and
// decodes its snapshot and positions.
func decodeSummary(sum *Summary, i int) (*pulled, error) {
	if sum.SnapshotBinary != nil {
		sum.Snapshot = new(aggregate.Snapshot)
		if err := sum.Snapshot.UnmarshalBinary(sum.SnapshotBinary); err != nil {
			return nil, err
		}
	}
	if sum.Snapshot == nil {
		return nil, errors.New("summary without a snapshot")
	}
	if sum.Replica != i {
		// Two entries of --replica-urls reach the same replica: merging it twice would count
		// everything it stored twice.
		return nil, fmt.Errorf("answered by replica %d, want %d (check --replica-urls)", sum.Replica, i)
	}
	pos := flows.NewCursor()
	if err := pos.UnmarshalBinary(sum.Positions); err != nil {
		return nil, fmt.Errorf("positions: %w", err)
	}
	return &pulled{snap: sum.Snapshot, pos: pos, evidence: sum.Evidence, copies: sum.Copies, store: sum.Store, covers: sum.Covers}, nil
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

type metrics struct {
	pulls       *prometheus.CounterVec
	keeps       *prometheus.CounterVec
	pulledBytes prometheus.Counter
	retired     prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, s *Set) *metrics {
	f := promauto.With(reg)
	m := &metrics{pulls: f.NewCounterVec(prometheus.CounterOpts{
		Name: "recommender_replica_pulls_total",
		Help: "Pulls of other replicas' edge summaries before a synthesis, by result (ok, error).",
	}, []string{"result"})}
	for _, r := range []string{"ok", "error"} {
		m.pulls.WithLabelValues(r)
	}
	m.keeps = f.NewCounterVec(prometheus.CounterOpts{
		Name: "recommender_replica_keeps_total",
		Help: "Writes of another replica's pulled summary into this replica's store, by result (ok, error): what stands in for that replica's edges after a restart of this one.",
	}, []string{"result"})
	for _, r := range []string{"ok", "error"} {
		m.keeps.WithLabelValues(r)
	}
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "recommender_replica_standins",
		Help: "Summaries in the merge that their replica did not serve to this process: kept in the store by an earlier run for a replica that has not answered since, or that left the set (--replicas lowered), and what a replica, this one included, held before its store was replaced; their edges expire by --retention.",
	}, func() float64 { return float64(s.StandIns()) })
	m.retired = f.NewCounter(prometheus.CounterOpts{
		Name: "recommender_replica_store_replacements_total",
		Help: "Pulls that found another replica serving the summary of another store than before: its store was replaced (a lost volume); what it held before stays in the merge as a stand-in.",
	})
	m.pulledBytes = f.NewCounter(prometheus.CounterOpts{
		Name: "recommender_replica_pulled_bytes_total",
		Help: "Bytes of other replicas' summaries read by pulls: what the replicas exchange every --sync-interval.",
	})
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "recommender_replicas_unreachable",
		Help: "Other replicas whose last summary pull failed; their previous summary stays in the merge.",
	}, func() float64 {
		s.mu.Lock()
		defer s.mu.Unlock()
		return float64(len(s.failing))
	})
	return m
}
