package daemon

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/recommender/recommender/pkg/aggregate"
	"github.com/recommender/recommender/pkg/audit"
	"github.com/recommender/recommender/pkg/flows"
	"github.com/recommender/recommender/pkg/lifecycle"
	"github.com/recommender/recommender/pkg/replay"
	"github.com/recommender/recommender/pkg/synth"
)

const recordings = "../../testdata/flows"

// relay is a replay relay that can be switched to another recording on the same address,
// as a Hubble Relay restart would look to the daemon.
type relay struct {
	t      *testing.T
	addr   string
	cancel context.CancelFunc
	done   chan error
}

// lastFlowTime returns the time of the newest event the daemon takes from a recording
// (replies and folded duplicates are skipped before it), as the metric shows it.
func lastFlowTime(t *testing.T, file string) float64 {
	t.Helper()
	fs, err := flows.NewFileSource(flows.FileConfig{Paths: []string{filepath.Join(recordings, file)}, Strict: true}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	src := flows.NewFolder(fs, fs.Stats())
	var last time.Time
	for {
		ev, err := src.Recv(t.Context())
		if err != nil {
			break
		}
		if ev.Time.After(last) {
			last = ev.Time
		}
	}
	return float64(last.UnixNano()) / 1e9
}

// waitSettled waits until the daemon ingested a whole recording and synced twice after
// that, so every flow of it has been evaluated and every window checked.
func waitSettled(t *testing.T, d *daemonUnderTest, file string) map[string]float64 {
	t.Helper()
	last := lastFlowTime(t, file)
	var syncs float64
	waitFor(t, d, file+" ingested", func(m map[string]float64) bool {
		syncs = m[`recommender_sync_runs_total{result="ok"}`]
		return m["recommender_ingest_last_flow_timestamp_seconds"] >= last
	})
	return waitFor(t, d, "two syncs after "+file, func(m map[string]float64) bool {
		return m[`recommender_sync_runs_total{result="ok"}`] >= syncs+2
	})
}

func startRelay(t *testing.T, addr, file string) *relay {
	t.Helper()
	rec, _, err := replay.Load(t.Context(), []string{filepath.Join(recordings, file)}, true, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := replay.New(rec, replay.Options{Follow: true}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	// The previous server's port may take a while to be released on a loaded machine: poll,
	// with a generous bound.
	var ln net.Listener
	deadline := time.Now().Add(30 * time.Second)
	for {
		if ln, err = net.Listen("tcp", addr); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &relay{t: t, addr: ln.Addr().String(), cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- srv.Serve(ctx, ln) }()
	return r
}

func (r *relay) stop() {
	r.cancel()
	if err := <-r.done; err != nil {
		r.t.Errorf("replay relay: %v", err)
	}
}

// daemonUnderTest is a daemon with a real store, a relay source and metrics over HTTP.
type daemonUnderTest struct {
	metrics string
	cancel  context.CancelFunc
	done    chan error
}

func startDaemon(t *testing.T, dbPath, relayAddr string, syncInterval time.Duration) *daemonUnderTest {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	reg := prometheus.NewPedanticRegistry()
	store, err := aggregate.Open(dbPath, aggregate.Options{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	agg, err := aggregate.NewAggregator(aggregate.Config{}, log, reg)
	if err != nil {
		t.Fatal(err)
	}
	rc := flows.DefaultRelayConfig()
	rc.Server, rc.Follow = relayAddr, true
	rc.BackoffInitial, rc.BackoffMax = 10*time.Millisecond, 50*time.Millisecond
	rs, err := flows.NewRelaySource(rc, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	flows.RegisterMetrics(reg, rs.Stats())
	rs.RegisterMetrics(reg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sc := synth.DefaultConfig()
	sc.MinObserve = 0
	dm, err := New(Config{
		SyncInterval: syncInterval,
		Lifecycle:    lifecycle.Config{Window: time.Minute, MaxFlowGap: 5 * time.Minute, MinWindowFlows: 1, MaxLostRatio: 0.01, Learn: true},
		Synth:        sc,
		Audit:        audit.Config{},
		Ingest:       aggregate.IngesterConfig{BatchSize: 100, BatchInterval: 20 * time.Millisecond},
	}, Deps{
		Log: log, Registry: reg, Source: flows.NewFolder(rs, rs.Stats()), Stats: rs.Stats(), Relay: rs,
		Store: store, Aggregator: agg, MetricsListener: ln,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &daemonUnderTest{metrics: "http://" + ln.Addr().String() + "/metrics", cancel: cancel, done: make(chan error, 1)}
	go func() {
		err := dm.Run(ctx)
		d.done <- errjoin(err, rs.Close(), store.Close())
	}()
	return d
}

func errjoin(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// stop shuts the daemon down as SIGTERM would and waits for its final commit.
func (d *daemonUnderTest) stop(t *testing.T) {
	t.Helper()
	d.cancel()
	if err := <-d.done; err != nil {
		t.Fatalf("daemon: %v", err)
	}
}

// scrape returns the samples of the exposition at url, keyed by "name{labels}".
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("scrape: bad sample %q", line)
		}
		out[line[:i]] = v
	}
	return out
}

// waitFor scrapes until cond holds; it fails after a generous deadline (a hung daemon, not
// a slow one: the condition is about state, and no speed is asserted).
func waitFor(t *testing.T, d *daemonUnderTest, what string, cond func(map[string]float64) bool) map[string]float64 {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		m := scrape(t, d.metrics)
		if cond(m) {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; metrics:\n%s", what, dump(m, "recommender_"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func dump(m map[string]float64, prefix string) string {
	var b strings.Builder
	for k, v := range m {
		if strings.HasPrefix(k, prefix) {
			fmt.Fprintf(&b, "%s %g\n", k, v)
		}
	}
	return b.String()
}

func sumPrefix(m map[string]float64, prefix string) float64 {
	var s float64
	for k, v := range m {
		if strings.HasPrefix(k, prefix) {
			s += v
		}
	}
	return s
}

// The end-to-end audit scenario of issue 6 over the replay relay: learn from one recording
// and propose audit policies; a second recording with only known traffic keeps the windows
// clean and promotes; a third with one new connection produces exactly one would-be-denied
// increment and a new revision. The daemon restarts between phases: windows keep their
// start, revisions under audit are evaluated from the first flow after a restart, and flows
// the relay re-sends are not counted twice.
func TestAuditLifecycleEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	db := filepath.Join(t.TempDir(), "recommender.db")

	// Learn the whole first recording before the first synthesis (the sync at shutdown), so
	// the proposals cover all of it.
	r := startRelay(t, "127.0.0.1:0", "boutique.jsonl")
	d := startDaemon(t, db, r.addr, time.Hour)
	last := lastFlowTime(t, "boutique.jsonl")
	waitFor(t, d, "boutique.jsonl ingested", func(m map[string]float64) bool {
		return m["recommender_ingest_last_flow_timestamp_seconds"] >= last
	})
	r.stop()
	d.stop(t) // the final sync proposes the first revisions; their windows start here

	r = startRelay(t, r.addr, "boutique-day2.jsonl")
	d = startDaemon(t, db, r.addr, 20*time.Millisecond)
	m := waitSettled(t, d, "boutique-day2.jsonl")
	if got := m[`recommender_workloads{state="enforced"}`]; got < 1 {
		t.Fatalf("enforced workloads after a clean window = %g, want some:\n%s", got, dump(m, "recommender_workloads"))
	}
	if got := sumPrefix(m, "recommender_would_deny_flows_total"); got != 0 {
		t.Fatalf("would-be-denied flows on known traffic = %g, want 0:\n%s", got, dump(m, "recommender_would_deny"))
	}
	if got := m["recommender_policy_revisions_total"]; got != 0 {
		t.Fatalf("new revisions on known traffic after restart = %g, want 0", got)
	}
	enforced := m[`recommender_workloads{state="enforced"}`]
	r.stop()
	d.stop(t)

	// One new connection, seen by a daemon that just restarted and has not run a periodic
	// sync yet: the revisions under audit are in the evaluator from the first flow on.
	r = startRelay(t, r.addr, "boutique-newconn.jsonl")
	d = startDaemon(t, db, r.addr, time.Hour)
	last = lastFlowTime(t, "boutique-newconn.jsonl")
	waitFor(t, d, "boutique-newconn.jsonl ingested", func(m map[string]float64) bool {
		return m["recommender_ingest_last_flow_timestamp_seconds"] >= last
	})
	// A scrape collects its series concurrently: the one that showed the last flow's time may
	// have read the counters before that flow was evaluated. The next scrape cannot.
	m = scrape(t, d.metrics)
	want := `recommender_would_deny_flows_total{direction="egress",namespace="boutique",peer_kind="entity",workload="recommendationservice"}`
	if got := m[want]; got != 1 {
		t.Errorf("%s = %g, want 1;\nall:\n%s", want, got, dump(m, "recommender_would_deny"))
	}
	if got := sumPrefix(m, "recommender_would_deny_flows_total"); got != 1 {
		t.Errorf("would-be-denied flows = %g, want exactly 1", got)
	}
	if got := m[`recommender_workloads{state="enforced"}`]; got != enforced {
		t.Errorf("enforced workloads = %g, want %g (nothing promoted or demoted yet)", got, enforced)
	}
	r.stop()
	d.stop(t) // the final sync learns the edge into a new revision

	// The relay re-sends what the store already holds: no flow is counted twice, and the
	// learned revision is the one under audit now.
	r = startRelay(t, r.addr, "boutique-newconn.jsonl")
	defer r.stop()
	d = startDaemon(t, db, r.addr, 20*time.Millisecond)
	m = waitSettled(t, d, "boutique-newconn.jsonl")
	if got := sumPrefix(m, "recommender_would_deny_flows_total"); got != 0 {
		t.Errorf("would-be-denied flows on re-sent, learned traffic = %g, want 0", got)
	}
	if got := m["recommender_policy_revisions_total"]; got != 0 {
		t.Errorf("revisions after the restart = %g, want 0 (learned before the restart)", got)
	}
	if _, ok := m[`recommender_workload_window_clean_seconds{namespace="boutique",workload="recommendationservice"}`]; !ok {
		t.Errorf("recommendationservice is not in audit with its learned revision:\n%s", dump(m, "recommender_workload"))
	}
	d.stop(t)
}
