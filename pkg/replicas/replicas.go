package replicas

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
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
	// retryEvery spaces the first Snapshot's pulls of replicas that did not answer yet.
	retryEvery = time.Second
)

// Config configures a Set. Field names follow the flags of `run`.
type Config struct {
	// Self is this replica's index in URLs (--replica-index).
	Self int
	// URLs are the base URLs of every replica's metrics port, by index (--replica-urls);
	// URLs[Self] is this replica's own and is never pulled.
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
}

// MaxSummaryFor is the bound of a pulled summary (Config.MaxSummary) for replicas that keep
// at most maxEdges edges each (--max-edges): 1 KiB per edge, at least DefaultMaxSummary. A
// summary takes about 70 bytes per edge in the binary form and 800 in the JSON form older
// replicas serve (BenchmarkSummary), so either fits; decoding the binary form allocates at
// most a small multiple of its size (aggregate.Snapshot.UnmarshalBinary).
func MaxSummaryFor(maxEdges int) int64 { return max(DefaultMaxSummary, int64(maxEdges)<<10) }

// Validate checks the configuration before anything starts.
func (c *Config) Validate() error {
	if len(c.URLs) == 0 {
		return errors.New("no replica URLs")
	}
	if c.Self < 0 || c.Self >= len(c.URLs) {
		return fmt.Errorf("replica index %d: want 0 to %d for %d replicas", c.Self, len(c.URLs)-1, len(c.URLs))
	}
	for i, u := range c.URLs {
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return fmt.Errorf("replica %d URL %q: want http://host:port", i, u)
		}
	}
	if c.Timeout < 0 || c.Wait < 0 || c.MaxSummary < 0 {
		return fmt.Errorf("replica pull timeout %s, wait %s and summary bound %d: must not be negative", c.Timeout, c.Wait, c.MaxSummary)
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

	// mu guards cache (the last summary pulled from each other replica, by index),
	// failing (the replicas whose last pull failed, for logging changes only) and warm (the
	// first Snapshot is done).
	mu    sync.Mutex
	cache map[int]*pulled
	// handoverMu serializes Handover's pull-then-reassign runs.
	handoverMu sync.Mutex
	failing    map[int]bool
	warm       bool
}

// pulled is a summary as the puller keeps it, its cursor decoded once.
type pulled struct {
	snap     *aggregate.Snapshot
	pos      *flows.Cursor
	evidence []lifecycle.Evidence
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
	if client == nil {
		// One pull per replica per sync: nothing to keep alive, and a kept or spare
		// connection would hold up the other replica's HTTP shutdown.
		client = &http.Client{Transport: &http.Transport{DisableKeepAlives: true, Proxy: http.ProxyFromEnvironment}}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	assign, err := flows.NewRendezvous(strconv.Itoa(cfg.Self), flows.StaticReplicas(len(cfg.URLs)))
	if err != nil {
		return nil, err
	}
	s := &Set{
		cfg: cfg, local: local, client: client, log: log.With("replica", cfg.Self), assign: assign,
		cache: make(map[int]*pulled), failing: make(map[int]bool),
	}
	s.m = newMetrics(reg, s)
	return s, nil
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
// form to a puller that asks for SummaryType, in the JSON form to any other.
func (s *Set) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cur, err := s.local.Positions()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		pos, err := cur.MarshalBinary()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		sum := Summary{Replica: s.cfg.Self, Positions: pos}
		contentType := "application/json"
		if snap := s.local.Snapshot(); acceptsBinary(r) {
			if sum.SnapshotBinary, err = snap.MarshalBinary(); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			contentType = SummaryType
		} else {
			sum.Snapshot = snap
		}
		if s.local.Evidence != nil {
			sum.Evidence = s.local.Evidence()
		}
		w.Header().Set("Content-Type", contentType)
		w.Header().Set("Vary", "Accept")
		if err := json.NewEncoder(w).Encode(sum); err != nil {
			s.log.Debug("write replica summary", "err", err)
		}
	})
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
// replica that does not answer contributes the summary it last served; one never reached
// contributes nothing, and the pull is retried on the next call.
func (s *Set) Snapshot(ctx context.Context) *aggregate.Snapshot {
	s.pullAll(ctx)
	s.mu.Lock()
	warm := s.warm
	s.warm = true
	s.mu.Unlock()
	if !warm {
		s.awaitAll(ctx)
	}
	snaps := []*aggregate.Snapshot{s.local.Snapshot()}
	s.mu.Lock()
	for i := range s.cfg.URLs {
		if p, ok := s.cache[i]; ok {
			snaps = append(snaps, p.snap)
		}
	}
	s.mu.Unlock()
	return aggregate.Merge(snaps...)
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
		members = flows.StaticReplicas(len(s.cfg.URLs))
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
			p.Evidence, p.Pulled = c.evidence, !s.failing[i]
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
			s.pullAll(context.Background())
			reassign()
		}()
	}
}

// Start is where this replica starts reading node (flows.NodesConfig.Start): the furthest
// any other replica's last summary says it was read, nil when none read it.
func (s *Set) Start(node string) *flows.Cursor {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out *flows.Cursor
	for _, p := range s.cache {
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
		s.pullAll(ctx)
	}
}

// missing returns the other replicas waited for that no summary was pulled from yet: all of
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
		if _, ok := s.cache[i]; !ok && i != s.cfg.Self && i >= 0 && i < len(s.cfg.URLs) {
			out = append(out, i)
		}
	}
	return out
}

// pullAll pulls every other replica at once, each bounded by the timeout.
func (s *Set) pullAll(ctx context.Context) {
	var wg sync.WaitGroup
	for i := range s.cfg.URLs {
		if i == s.cfg.Self {
			continue
		}
		wg.Go(func() {
			p, err := s.pull(ctx, i)
			s.record(i, p, err)
		})
	}
	wg.Wait()
}

func (s *Set) record(i int, p *pulled, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.m.pulls.WithLabelValues("error").Inc()
		if !s.failing[i] {
			_, cached := s.cache[i]
			s.log.Warn("replica summary not pulled: its last one stays in the merge", "peer", i, "url", s.cfg.URLs[i], "err", err, "cached", cached)
		}
		s.failing[i] = true
		return
	}
	s.m.pulls.WithLabelValues("ok").Inc()
	if s.failing[i] {
		s.log.Info("replica summary pulled again", "peer", i)
	}
	delete(s.failing, i)
	s.cache[i] = p
}

func (s *Set) pull(ctx context.Context, i int) (*pulled, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	u := strings.TrimSuffix(s.cfg.URLs[i], "/") + SummaryPath
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", SummaryType+", application/json;q=0.5")
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	body := &countingReader{r: io.LimitReader(resp.Body, s.cfg.MaxSummary+1)}
	var sum Summary
	err = json.NewDecoder(body).Decode(&sum)
	s.m.pulledBytes.Add(float64(body.n))
	if body.n > s.cfg.MaxSummary {
		return nil, fmt.Errorf("GET %s: summary larger than %d bytes", u, s.cfg.MaxSummary)
	}
	if err != nil {
		return nil, fmt.Errorf("GET %s: decode summary: %w", u, err)
	}
	if sum.SnapshotBinary != nil {
		sum.Snapshot = new(aggregate.Snapshot)
		if err := sum.Snapshot.UnmarshalBinary(sum.SnapshotBinary); err != nil {
			return nil, fmt.Errorf("GET %s: %w", u, err)
		}
	}
	if sum.Replica != i {
		// Two entries of --replica-urls reach the same replica: merging it twice would count
		// everything it stored twice.
		return nil, fmt.Errorf("GET %s: answered by replica %d, want %d (check --replica-urls)", u, sum.Replica, i)
	}
	pos := flows.NewCursor()
	if err := pos.UnmarshalBinary(sum.Positions); err != nil {
		return nil, fmt.Errorf("GET %s: positions: %w", u, err)
	}
	return &pulled{snap: sum.Snapshot, pos: pos, evidence: sum.Evidence}, nil
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
	pulledBytes prometheus.Counter
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
