package gitops

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const testToken = "ghp_TESTTOKEN0123456789abcdef"

// fakeGitHub implements the REST endpoints gitops uses, under the Enterprise prefix /api/v3, with the
// request and response shapes of docs.github.com/rest/pulls/pulls and /rest/issues/labels.
type fakeGitHub struct {
	owner, repo string

	// mu guards everything below.
	mu       sync.Mutex
	pulls    []*fakePull
	requests []string              // "METHOD path" of every request, in order
	auth     []string              // Authorization header of every request
	failures map[string][]fakeResp // canned responses by "METHOD pattern", served before the real handler
}

type fakePull struct {
	Number int      `json:"number"`
	State  string   `json:"state"`
	Title  string   `json:"title"`
	Body   string   `json:"body"`
	Head   string   `json:"-"`
	Base   string   `json:"-"`
	Labels []string `json:"-"`
}

type fakeResp struct {
	status int
	header map[string]string
	body   string
}

func newFakeGitHub(t *testing.T) (*fakeGitHub, *httptest.Server) {
	t.Helper()
	f := &fakeGitHub{owner: "acme", repo: "policies", failures: map[string][]fakeResp{}}
	mux := http.NewServeMux()
	f.handle(mux, "GET /api/v3/repos/{owner}/{repo}/pulls", f.listPulls)
	f.handle(mux, "POST /api/v3/repos/{owner}/{repo}/pulls", f.createPull)
	f.handle(mux, "PATCH /api/v3/repos/{owner}/{repo}/pulls/{number}", f.updatePull)
	f.handle(mux, "POST /api/v3/repos/{owner}/{repo}/issues/{number}/labels", f.addLabels)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return f, srv
}

func (f *fakeGitHub) fail(pattern string, r fakeResp) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failures[pattern] = append(f.failures[pattern], r)
}

func (f *fakeGitHub) handle(mux *http.ServeMux, pattern string, h func(http.ResponseWriter, *http.Request)) {
	mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.requests = append(f.requests, r.Method+" "+r.URL.Path)
		f.auth = append(f.auth, r.Header.Get("Authorization"))
		if q := f.failures[pattern]; len(q) > 0 {
			f.failures[pattern] = q[1:]
			for k, v := range q[0].header {
				w.Header().Set(k, v)
			}
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			w.WriteHeader(q[0].status)
			fmt.Fprint(w, q[0].body)
			return
		}
		if r.Header.Get("Authorization") != "Bearer "+testToken {
			writeJSON(w, http.StatusUnauthorized, map[string]string{"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"})
			return
		}
		if r.PathValue("owner") != f.owner || r.PathValue("repo") != f.repo {
			writeJSON(w, http.StatusNotFound, map[string]string{"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})
			return
		}
		h(w, r)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// pullJSON is the subset of the documented pull request object gitops reads.
func (f *fakeGitHub) pullJSON(p *fakePull) map[string]any {
	labels := []map[string]any{}
	for i, l := range p.Labels {
		labels = append(labels, map[string]any{"id": i + 1, "name": l})
	}
	return map[string]any{
		"number": p.Number, "state": p.State, "title": p.Title, "body": p.Body,
		"html_url": fmt.Sprintf("https://github.example.com/%s/%s/pull/%d", f.owner, f.repo, p.Number),
		"head":     map[string]any{"ref": p.Head, "label": f.owner + ":" + p.Head},
		"base":     map[string]any{"ref": p.Base},
		"labels":   labels,
	}
}

func (f *fakeGitHub) listPulls(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	out := []map[string]any{}
	for _, p := range f.pulls {
		if (q.Get("state") == "" || q.Get("state") == p.State) &&
			(q.Get("head") == "" || q.Get("head") == f.owner+":"+p.Head) &&
			(q.Get("base") == "" || q.Get("base") == p.Base) {
			out = append(out, f.pullJSON(p))
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func validationFailed(w http.ResponseWriter, msg string) {
	writeJSON(w, http.StatusUnprocessableEntity, map[string]any{
		"message":           "Validation Failed",
		"errors":            []map[string]string{{"resource": "PullRequest", "code": "custom", "message": msg}},
		"documentation_url": "https://docs.github.com/rest/pulls/pulls#create-a-pull-request",
	})
}

func (f *fakeGitHub) createPull(w http.ResponseWriter, r *http.Request) {
	var in struct{ Title, Head, Base, Body string }
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil || in.Head == "" || in.Base == "" {
		validationFailed(w, "head and base are required")
		return
	}
	for _, p := range f.pulls {
		if p.State == "open" && p.Head == in.Head && p.Base == in.Base {
			validationFailed(w, fmt.Sprintf("A pull request already exists for %s:%s.", f.owner, in.Head))
			return
		}
	}
	p := &fakePull{Number: len(f.pulls) + 1, State: "open", Title: in.Title, Body: in.Body, Head: in.Head, Base: in.Base}
	f.pulls = append(f.pulls, p)
	writeJSON(w, http.StatusCreated, f.pullJSON(p))
}

func (f *fakeGitHub) pull(w http.ResponseWriter, r *http.Request) *fakePull {
	n, _ := strconv.Atoi(r.PathValue("number"))
	if n < 1 || n > len(f.pulls) {
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "Not Found"})
		return nil
	}
	return f.pulls[n-1]
}

func (f *fakeGitHub) updatePull(w http.ResponseWriter, r *http.Request) {
	p := f.pull(w, r)
	if p == nil {
		return
	}
	var in struct{ Title, Body *string }
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		validationFailed(w, err.Error())
		return
	}
	if in.Title != nil {
		p.Title = *in.Title
	}
	if in.Body != nil {
		p.Body = *in.Body
	}
	writeJSON(w, http.StatusOK, f.pullJSON(p))
}

// addLabels accepts both documented request bodies: {"labels": [...]} and a bare array.
func (f *fakeGitHub) addLabels(w http.ResponseWriter, r *http.Request) {
	p := f.pull(w, r)
	if p == nil {
		return
	}
	var raw json.RawMessage
	if err := json.NewDecoder(r.Body).Decode(&raw); err != nil {
		validationFailed(w, err.Error())
		return
	}
	var labels []string
	var obj struct{ Labels []string }
	if err := json.Unmarshal(raw, &labels); err != nil {
		if err := json.Unmarshal(raw, &obj); err != nil {
			validationFailed(w, "labels must be an array of strings")
			return
		}
		labels = obj.Labels
	}
	for _, l := range labels {
		if !slices.Contains(p.Labels, l) {
			p.Labels = append(p.Labels, l)
		}
	}
	out := []map[string]any{}
	for _, l := range p.Labels {
		out = append(out, map[string]any{"name": l})
	}
	writeJSON(w, http.StatusOK, out)
}

func (f *fakeGitHub) snapshot() (pulls []fakePull, requests, auth []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range f.pulls {
		pulls = append(pulls, *p)
	}
	return pulls, slices.Clone(f.requests), slices.Clone(f.auth)
}

func writeTokenFile(t *testing.T, token string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(p, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func newTestGitHub(t *testing.T, srv *httptest.Server, clock Clock) (*GitHub, *logBuffer) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.GitHubRepo = "acme/policies"
	cfg.GitHubTokenFile = writeTokenFile(t, testToken)
	cfg.GitHubAPIURL = srv.URL + "/"
	log, lb := newTestLogger(t)
	gh, err := NewGitHub(cfg, clock, log)
	if err != nil {
		t.Fatal(err)
	}
	return gh, lb
}

var testPR = PullRequest{Head: ProposalsBranch, Base: "main", Title: "Network policy proposals: 1 added", Body: "body 1",
	Labels: []string{LabelNetworkPolicy, string(KindProposals)}}

// Ensure that the first call opens and labels the PR, an identical call changes nothing, and a new
// body edits the same PR instead of opening a second one.
func TestEnsurePullRequestCreateThenUpdate(t *testing.T) {
	fake, srv := newFakeGitHub(t)
	gh, _ := newTestGitHub(t, srv, newFakeClock())

	ref, err := gh.EnsurePullRequest(t.Context(), testPR)
	if err != nil {
		t.Fatalf("EnsurePullRequest: %v", err)
	}
	if !ref.Created || ref.Updated || ref.Number != 1 || ref.URL != "https://github.example.com/acme/policies/pull/1" {
		t.Errorf("first call = %+v, want PR #1 created", ref)
	}
	pulls, reqs, auth := fake.snapshot()
	wantReqs := []string{
		"GET /api/v3/repos/acme/policies/pulls",
		"POST /api/v3/repos/acme/policies/pulls",
		"POST /api/v3/repos/acme/policies/issues/1/labels",
	}
	if !slices.Equal(reqs, wantReqs) {
		t.Errorf("requests = %q, want %q", reqs, wantReqs)
	}
	for i, a := range auth {
		if a != "Bearer "+testToken {
			t.Errorf("request %d Authorization = %q, want the bearer token", i, a)
		}
	}
	if len(pulls) != 1 || pulls[0].Body != "body 1" || !slices.Equal(pulls[0].Labels, []string{"network-policy", "audit"}) {
		t.Errorf("pulls = %+v", pulls)
	}

	if ref, err := gh.EnsurePullRequest(t.Context(), testPR); err != nil || ref.Created || ref.Updated || ref.Number != 1 {
		t.Errorf("same PR again = %+v, %v, want no change", ref, err)
	}
	if _, reqs, _ := fake.snapshot(); len(reqs) != 4 {
		t.Errorf("same PR again made requests %q, want only the list", reqs[3:])
	}

	pr := testPR
	pr.Body = "body 2"
	ref, err = gh.EnsurePullRequest(t.Context(), pr)
	if err != nil || !ref.Updated || ref.Created || ref.Number != 1 {
		t.Errorf("new body = %+v, %v, want PR #1 updated", ref, err)
	}
	pulls, reqs, _ = fake.snapshot()
	if len(pulls) != 1 || pulls[0].Body != "body 2" {
		t.Errorf("pulls = %+v, want one PR with body 2", pulls)
	}
	if got := reqs[len(reqs)-1]; got != "PATCH /api/v3/repos/acme/policies/pulls/1" {
		t.Errorf("last request = %q, want the PATCH", got)
	}
}

// Ensure that GitHub's error statuses map to the sentinels and keep GitHub's message, and that the
// token never shows up in an error or a log line.
func TestEnsurePullRequestErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		setup   func(*fakeGitHub)
		repo    string
		want    error
		message string
	}{
		{name: "401 bad credentials", setup: func(f *fakeGitHub) {
			f.fail("GET /api/v3/repos/{owner}/{repo}/pulls", fakeResp{status: 401, body: `{"message":"Bad credentials","documentation_url":"https://docs.github.com/rest"}`})
		}, want: ErrUnauthorized, message: "Bad credentials"},
		{name: "404 unknown repository", repo: "acme/nope", want: ErrNotFound, message: "Not Found"},
		{name: "422 validation", setup: func(f *fakeGitHub) {
			f.fail("POST /api/v3/repos/{owner}/{repo}/pulls", fakeResp{status: 422, body: `{"message":"Validation Failed",` +
				`"errors":[{"resource":"PullRequest","code":"custom","message":"No commits between main and recommender/proposals"}],` +
				`"documentation_url":"https://docs.github.com/rest/pulls/pulls#create-a-pull-request"}`})
		}, want: ErrValidation, message: "Validation Failed: No commits between main and recommender/proposals"},
		{name: "422 field error", setup: func(f *fakeGitHub) {
			f.fail("POST /api/v3/repos/{owner}/{repo}/pulls", fakeResp{status: 422, body: `{"message":"Validation Failed",` +
				`"errors":[{"resource":"PullRequest","field":"base","code":"invalid"}]}`})
		}, want: ErrValidation, message: "PullRequest.base: invalid"},
		{name: "403 missing permission", setup: func(f *fakeGitHub) {
			f.fail("POST /api/v3/repos/{owner}/{repo}/issues/{number}/labels", fakeResp{status: 403,
				body: `{"message":"Resource not accessible by integration"}`})
		}, want: ErrForbidden, message: "Resource not accessible by integration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake, srv := newFakeGitHub(t)
			if tc.setup != nil {
				tc.setup(fake)
			}
			gh, logs := newTestGitHub(t, srv, newFakeClock())
			if tc.repo != "" {
				gh.owner, gh.repo, _ = strings.Cut(tc.repo, "/")
			}
			_, err := gh.EnsurePullRequest(t.Context(), testPR)
			if !errors.Is(err, tc.want) {
				t.Fatalf("EnsurePullRequest = %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.message) {
				t.Errorf("error %q lacks GitHub's message %q", err, tc.message)
			}
			if strings.Contains(err.Error(), testToken) || strings.Contains(logs.String(), testToken) {
				t.Errorf("token leaked: error %q, logs %q", err, logs)
			}
		})
	}
}

// Ensure that rate-limited calls wait as GitHub asks, on the injected clock, and then succeed, and
// that waits beyond the retry budget fail with ErrRateLimited.
func TestEnsurePullRequestRateLimit(t *testing.T) {
	const list = "GET /api/v3/repos/{owner}/{repo}/pulls"
	clockStart := newFakeClock().Now()
	secondary := fakeResp{status: 403, header: map[string]string{"Retry-After": "30"},
		body: `{"message":"You have exceeded a secondary rate limit.","documentation_url":"https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits"}`}
	primary := fakeResp{status: 403, header: map[string]string{
		"X-RateLimit-Limit": "5000", "X-RateLimit-Remaining": "0", "X-RateLimit-Used": "5000",
		"X-RateLimit-Reset": strconv.FormatInt(clockStart.Add(2*time.Minute).Unix(), 10)},
		body: `{"message":"API rate limit exceeded for installation ID 1.","documentation_url":"https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"}`}
	tooMany := fakeResp{status: 429, body: `{"message":"Too Many Requests"}`}
	for _, tc := range []struct {
		name      string
		responses []fakeResp
		wantSlept []time.Duration
		wantErr   error
	}{
		{name: "403 retry-after", responses: []fakeResp{secondary}, wantSlept: []time.Duration{30 * time.Second}},
		{name: "403 reset", responses: []fakeResp{primary}, wantSlept: []time.Duration{2 * time.Minute}},
		{name: "429 without headers", responses: []fakeResp{tooMany}, wantSlept: []time.Duration{time.Minute}},
		{name: "retries exhausted", responses: []fakeResp{secondary, secondary, secondary, secondary},
			wantSlept: []time.Duration{30 * time.Second, 30 * time.Second, 30 * time.Second}, wantErr: ErrRateLimited},
		{name: "wait too long", responses: []fakeResp{{status: 429, header: map[string]string{"Retry-After": "3600"}, body: `{"message":"slow down"}`}},
			wantErr: ErrRateLimited},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake, srv := newFakeGitHub(t)
			for _, r := range tc.responses {
				fake.fail(list, r)
			}
			clock := newFakeClock()
			gh, _ := newTestGitHub(t, srv, clock)
			ref, err := gh.EnsurePullRequest(t.Context(), testPR)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("EnsurePullRequest = %+v, %v, want error %v", ref, err, tc.wantErr)
			}
			if !slices.Equal(clock.slept, tc.wantSlept) {
				t.Errorf("slept %v, want %v", clock.slept, tc.wantSlept)
			}
			if tc.wantErr == nil && !ref.Created {
				t.Errorf("after the rate limit: %+v, want the PR created", ref)
			}
		})
	}
}

// Ensure that a missing token file is reported by flag name before any request is sent.
func TestGitHubMissingTokenFile(t *testing.T) {
	fake, srv := newFakeGitHub(t)
	gh, _ := newTestGitHub(t, srv, newFakeClock())
	gh.client.Client().Transport.(*tokenTransport).file = filepath.Join(t.TempDir(), "absent")
	_, err := gh.EnsurePullRequest(t.Context(), testPR)
	if err == nil || !strings.Contains(err.Error(), "--github-token-file") {
		t.Errorf("EnsurePullRequest = %v, want an error naming --github-token-file", err)
	}
	if _, reqs, _ := fake.snapshot(); len(reqs) != 0 {
		t.Errorf("requests sent without a token: %q", reqs)
	}
}
