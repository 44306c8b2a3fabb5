package daemon

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/recommender/recommender/pkg/lifecycle"
	"github.com/recommender/recommender/pkg/synth"
)

// artifactDir keeps the status page's screenshot after the test (out/ is gitignored).
const artifactDir = "../../out/status"

// chromium returns the headless browser the status page is checked with. scripts/test.sh
// installs Debian's chromium; where it cannot be installed the test is skipped, saying so.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("chromium not found: install Debian's chromium package (scripts/test.sh does) to test the status page in a real browser")
	return ""
}

// browse runs headless Chromium on url with a fresh profile and no network of its own, with
// extra flags for what to produce (--dump-dom, --screenshot=...), and returns its stdout.
func browse(t *testing.T, bin, url string, extra ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	args := append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--hide-scrollbars", "--user-data-dir=" + t.TempDir()}, extra...)
	cmd := exec.CommandContext(ctx, bin, append(args, url)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %s: %v\n%s", url, err, stderr.String())
	}
	return stdout.Bytes()
}

// Ensure the status page, loaded in a real browser from a daemon fed by the replay relay,
// shows each lifecycle state with the daemon's own counts, the audit windows' progress and
// blockers, the would-be-denied flow of the workload that met new traffic, and every
// revision's YAML; and that it offers no write action.
func TestStatusPageInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	bin := chromium(t)
	db := filepath.Join(t.TempDir(), "recommender.db")

	// Learn, promote on a clean day, then meet one new connection (see
	// TestAuditLifecycleEndToEnd for the same phases).
	r := startRelay(t, "127.0.0.1:0", "boutique.jsonl")
	d := startDaemon(t, db, r.addr, time.Hour)
	last := lastFlowTime(t, "boutique.jsonl")
	waitFor(t, d, "boutique.jsonl ingested", func(m map[string]float64) bool {
		return m["recommender_ingest_last_flow_timestamp_seconds"] >= last
	})
	r.stop()
	d.stop(t)
	r = startRelay(t, r.addr, "boutique-day2.jsonl")
	d = startDaemon(t, db, r.addr, 20*time.Millisecond)
	waitSettled(t, d, "boutique-day2.jsonl")
	r.stop()
	d.stop(t)
	// The new connection is denied, learned into a new revision on the next sync, and that
	// revision is audited while the promoted one stays enforced.
	r = startRelay(t, r.addr, "boutique-newconn.jsonl")
	defer r.stop()
	d = startDaemon(t, db, r.addr, 20*time.Millisecond)
	defer d.stop(t)
	waitSettled(t, d, "boutique-newconn.jsonl")
	m := waitFor(t, d, "the would-be-denied flow learned", func(m map[string]float64) bool {
		return m["recommender_policy_revisions_total"] >= 1
	})

	url := strings.TrimSuffix(d.metrics, "metrics")
	dom := string(browse(t, bin, url, "--dump-dom"))
	if !strings.Contains(dom, "<h1>recommender</h1>") {
		t.Fatalf("chromium did not render the status page:\n%s", dom)
	}
	for _, s := range lifecycle.States {
		want := fmt.Sprintf(`id="count-%s">%g<`, s, m[fmt.Sprintf(`recommender_workloads{state="%s"}`, s)])
		if !strings.Contains(dom, want) {
			t.Errorf("page lacks %s (the daemon's count of %s workloads)", want, s)
		}
		if got, want := strings.Count(dom, `data-state="`+string(s)+`"`), int(m[fmt.Sprintf(`recommender_workloads{state="%s"}`, s)]); got != want {
			t.Errorf("page lists %d %s workloads, want %d", got, s, want)
		}
	}
	if m[`recommender_workloads{state="enforced"}`] < 1 {
		t.Errorf("no workload enforced after the clean day:\n%s", dump(m, "recommender_workloads"))
	}
	rows := regexp.MustCompile(`(?s)<tbody class="workload" data-state="(\w+)" data-workload="([^"]+)">(.*?)</tbody>`).FindAllStringSubmatch(dom, -1)
	var learned []string
	for _, row := range rows {
		state, name, body := row[1], row[2], row[3]
		if state == string(lifecycle.Audit) && !strings.Contains(body, "<progress") {
			t.Errorf("audit workload %s has no progress bar:\n%s", name, body)
		}
		if state == string(lifecycle.Audit) && !strings.Contains(body, "blocked: ") && !strings.Contains(body, "ready: ") {
			t.Errorf("audit workload %s says neither what blocks it nor that it is ready:\n%s", name, body)
		}
		if strings.Contains(body, "learned from the would-be-denied flows") {
			learned = append(learned, name)
		}
		if !strings.HasSuffix(name, "/recommendationservice") {
			continue
		}
		// The would-be-denied flow, the rule learned from it, and the enforcement kept.
		for _, want := range []string{
			"egress reserved:kube-apiserver 443/TCP ×1",
			`<li class="add">+ egress to entity:kube-apiserver 443/TCP</li>`,
			"policy still enforced while the new revision is audited",
		} {
			if !strings.Contains(body, want) {
				t.Errorf("%s lacks %q:\n%s", name, want, body)
			}
		}
		if state != string(lifecycle.Audit) {
			t.Errorf("%s is %s, want audit with its learned revision", name, state)
		}
		if n := strings.Count(body, `<details class="revision"`); n != 2 {
			t.Errorf("%s shows %d revisions, want 2 (promoted, learned)", name, n)
		}
	}
	if len(learned) != 1 || !strings.HasSuffix(learned[0], "/recommendationservice") {
		t.Errorf("workloads with a revision learned from would-be-denied flows = %v, want recommendationservice only", learned)
	}
	if n := strings.Count(dom, `<details class="revision"`); n < int(m[`recommender_workloads{state="enforced"}`]) {
		t.Errorf("page shows %d revisions, want one at least per enforced workload", n)
	}
	if !strings.Contains(dom, "kind: CiliumClusterwideNetworkPolicy") {
		t.Error("page shows no revision YAML")
	}
	for _, w := range []string{"<form", "<button", "<script", `method="post"`} {
		if strings.Contains(strings.ToLower(dom), w) {
			t.Errorf("read-only page contains %s", w)
		}
	}

	if err := os.MkdirAll(artifactDir, 0o755); err != nil {
		t.Fatal(err)
	}
	shot, err := filepath.Abs(filepath.Join(artifactDir, "status.png"))
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(shot)
	browse(t, bin, url, "--screenshot="+shot, "--window-size=1280,1400")
	if b, err := os.ReadFile(shot); err != nil || !bytes.HasPrefix(b, []byte("\x89PNG")) {
		t.Fatalf("chromium wrote no PNG screenshot at %s: %v", shot, err)
	}
	t.Logf("status page screenshot: %s", shot)
}

// Ensure the status page answers only GET / (no write method is served), and that an
// unknown path is not the status page.
func TestStatusPageReadOnly(t *testing.T) {
	dir := t.TempDir()
	dm, err := New(Config{SyncInterval: time.Hour, Lifecycle: lifecycle.DefaultConfig(), Synth: synth.DefaultConfig()}, fileDeps(t, dir, nil, "starwars.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	mux := newMux(dm.d.Registry, nil, false, dm.statusHandler())
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{http.MethodGet, "/", http.StatusOK},
		{http.MethodHead, "/", http.StatusOK},
		{http.MethodPost, "/", http.StatusMethodNotAllowed},
		{http.MethodDelete, "/", http.StatusMethodNotAllowed},
		{http.MethodGet, "/nothing", http.StatusNotFound},
	} {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, nil))
		if rec.Code != tc.want {
			t.Errorf("%s %s = %d, want %d", tc.method, tc.path, rec.Code, tc.want)
		}
	}
}
