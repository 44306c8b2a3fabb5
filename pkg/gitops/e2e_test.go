package gitops

import (
	"encoding/base64"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// gitHTTPServer serves a bare repository over smart HTTP with the real git-http-backend, and
// insists on GitHub-style token auth (basic, user x-access-token).
type gitHTTPServer struct {
	// mu guards authSeen.
	mu       sync.Mutex
	authSeen []string
}

func newGitHTTPServer(t *testing.T, remote *testRemote, token string) (*gitHTTPServer, string) {
	t.Helper()
	backend, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		t.Fatal(err)
	}
	testGit(t, remote.bare, "config", "http.receivepack", "true")
	root, name := remote.bare[:strings.LastIndex(remote.bare, "/")], remote.bare[strings.LastIndex(remote.bare, "/")+1:]
	h := &cgi.Handler{
		Path: strings.TrimSpace(string(backend)) + "/git-http-backend",
		Root: "/git",
		Env:  []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1", "GIT_CONFIG_NOSYSTEM=1", "HOME=" + root},
	}
	want := "Basic " + base64.StdEncoding.EncodeToString([]byte("x-access-token:"+token))
	s := &gitHTTPServer{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.authSeen = append(s.authSeen, r.Header.Get("Authorization"))
		s.mu.Unlock()
		if r.Header.Get("Authorization") != want {
			w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return s, srv.URL + "/git/" + name
}

// Ensure that the HTTPS token reaches the git server and nothing else: not the logs (at debug level,
// which prints every git command line), not the errors.
func TestGitHTTPSTokenNeverLogged(t *testing.T) {
	const token = "ghs_GITTOKEN_do_not_log_42"
	basic := base64.StdEncoding.EncodeToString([]byte("x-access-token:" + token))
	remote := newTestRemote(t)
	srv, url := newGitHTTPServer(t, remote, token)

	cfg := testConfig(t, url)
	cfg.GitTokenFile = writeTokenFile(t, token)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	log, logs := newTestLogger(t)
	p, err := New(cfg, newFakeClock(), log, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	res, err := p.Publish(t.Context(), ChangeSet{proposal("a", StateAudit, "r1")})
	if err != nil {
		t.Fatalf("Publish over HTTPS: %v", err)
	}
	if br := branchResult(t, res, ProposalsBranch); !br.Pushed || remote.rev(t, ProposalsBranch) != br.Commit {
		t.Errorf("branch = %+v, want pushed", br)
	}
	srv.mu.Lock()
	seen := len(srv.authSeen)
	srv.mu.Unlock()
	if seen == 0 || !strings.Contains(logs.String(), "git") {
		t.Fatalf("no request reached the git server (%d) or nothing was logged", seen)
	}
	for _, secret := range []string{token, basic} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("logs contain the token:\n%s", logs)
		}
	}

	// A wrong token fails with an error that names neither token.
	const wrong = "ghs_WRONGTOKEN_do_not_log_43"
	cfg.GitTokenFile = writeTokenFile(t, wrong)
	cfg.GitWorkDir = t.TempDir()
	log, logs = newTestLogger(t)
	p2, err := New(cfg, newFakeClock(), log, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close()
	_, err = p2.Publish(t.Context(), ChangeSet{proposal("a", StateAudit, "r2")})
	if err == nil || !strings.Contains(err.Error(), "credentials rejected") {
		t.Fatalf("Publish with a wrong token = %v, want credentials rejected", err)
	}
	for _, secret := range []string{wrong, base64.StdEncoding.EncodeToString([]byte("x-access-token:" + wrong))} {
		if strings.Contains(err.Error(), secret) || strings.Contains(logs.String(), secret) {
			t.Errorf("wrong token leaked: error %q, logs:\n%s", err, logs)
		}
	}
}

// Ensure that scrub removes a secret that a remote echoes back on stderr.
func TestScrub(t *testing.T) {
	g := &gitCmd{secrets: []string{"tok123"}}
	if got := g.scrub("remote: bad token tok123 given"); got != "remote: bad token REDACTED given" {
		t.Errorf("scrub = %q", got)
	}
}

// Ensure the whole cycle against a real repository and the GitHub API: one proposals PR updated in
// place, a separate promotion PR with its own label, and no API writes when nothing changed.
func TestPublishPullRequests(t *testing.T) {
	remote := newTestRemote(t)
	fake, srv := newFakeGitHub(t)
	cfg := testConfig(t, remote.bare)
	cfg.GitOnly = false
	cfg.GitHubRepo = "acme/policies"
	cfg.GitHubTokenFile = writeTokenFile(t, testToken)
	cfg.GitHubAPIURL = srv.URL
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	p := newTestPublisher(t, cfg, newFakeClock())

	res := mustPublish(t, p, ChangeSet{proposal("a", StateAudit, "r1"), proposal("b", StateAudit, "r1")})
	if pr := branchResult(t, res, ProposalsBranch).PullRequest; pr == nil || !pr.Created || pr.Number != 1 {
		t.Fatalf("first publish PR = %+v, want #1 created", pr)
	}
	res = mustPublish(t, p, ChangeSet{proposal("a", StateAudit, "r2"), proposal("b", StateAudit, "r1")})
	if pr := branchResult(t, res, ProposalsBranch).PullRequest; pr == nil || !pr.Updated || pr.Number != 1 {
		t.Fatalf("second publish PR = %+v, want #1 updated", pr)
	}
	pulls, _, _ := fake.snapshot()
	if len(pulls) != 1 || pulls[0].Head != ProposalsBranch || pulls[0].Base != "main" ||
		!strings.Contains(pulls[0].Body, "revision `r2`") || !slices.Equal(pulls[0].Labels, []string{"network-policy", "audit"}) {
		t.Fatalf("pulls = %+v", pulls)
	}

	remote.merge(t, ProposalsBranch)
	res = mustPublish(t, p, ChangeSet{proposal("a", StateEnforced, "r2"), proposal("b", StateAudit, "r1")})
	if br := branchResult(t, res, ProposalsBranch); !br.Empty || br.PullRequest != nil {
		t.Errorf("proposals after merge = %+v, want empty without PR", br)
	}
	promo := branchResult(t, res, PromotionBranch("a")).PullRequest
	if promo == nil || !promo.Created || promo.Number != 2 {
		t.Fatalf("promotion PR = %+v, want #2 created", promo)
	}
	pulls, reqs, _ := fake.snapshot()
	if p := pulls[1]; p.Head != PromotionBranch("a") || p.Title != "Promote network policy a to enforced" ||
		!slices.Equal(p.Labels, []string{"network-policy", "promotion"}) || !strings.Contains(p.Body, "<!-- recommender:promotion -->") {
		t.Errorf("promotion PR = %+v", p)
	}

	// A restart with the same input: no push, and only reads against the API.
	before := len(reqs)
	res = mustPublish(t, newTestPublisher(t, cfg, newFakeClock()), ChangeSet{proposal("b", StateAudit, "r1"), proposal("a", StateEnforced, "r2")})
	for _, br := range res.Branches {
		if br.Pushed {
			t.Errorf("branch %s pushed again", br.Branch)
		}
	}
	_, reqs, _ = fake.snapshot()
	for _, r := range reqs[before:] {
		if !strings.HasPrefix(r, "GET ") {
			t.Errorf("unchanged input sent %s", r)
		}
	}

	// A restart whose only news is evidence (more flows, a later last-seen): the same (issue 20).
	grown := func(p Proposal) Proposal {
		p.Evidence = []RuleEvidence{{Rule: "ingress from x on TCP/80", Flows: 123456,
			FirstSeen: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC), LastSeen: time.Date(2026, 3, 9, 0, 0, 0, 0, time.UTC)}}
		p.Window.FlowsSeen += 1000
		return p
	}
	before = len(reqs)
	res = mustPublish(t, newTestPublisher(t, cfg, newFakeClock()), ChangeSet{grown(proposal("b", StateAudit, "r1")), grown(proposal("a", StateEnforced, "r2"))})
	for _, br := range res.Branches {
		if br.Pushed || (br.PullRequest != nil && br.PullRequest.Updated) {
			t.Errorf("branch %s pushed or its PR edited for new evidence only: %+v", br.Branch, br)
		}
	}
	_, reqs, _ = fake.snapshot()
	for _, r := range reqs[before:] {
		if !strings.HasPrefix(r, "GET ") {
			t.Errorf("evidence-only input sent %s", r)
		}
	}
}
