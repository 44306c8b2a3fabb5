package gitops

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-github/v74/github"
)

// Clock is the time source of the Publisher and the GitHub client; tests inject a fake so that
// batching and rate-limit waits are checked without sleeping.
type Clock interface {
	Now() time.Time
	// Sleep waits for d or until ctx is done, returning ctx.Err() then.
	Sleep(ctx context.Context, d time.Duration) error
}

// SystemClock is the wall clock.
type SystemClock struct{}

func (SystemClock) Now() time.Time { return time.Now() }

func (SystemClock) Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Labels put on every pull request; the second label is the PR's Kind.
const LabelNetworkPolicy = "network-policy"

const (
	// maxRateLimitRetries bounds the retries of one API call while GitHub rate-limits it.
	maxRateLimitRetries = 3
	// maxRateLimitWait is the longest wait for a rate limit to reset; longer waits fail the call so that
	// the next publication cycle tries again instead of blocking the daemon for up to an hour.
	maxRateLimitWait = 15 * time.Minute
	// defaultRateLimitWait is GitHub's advice for a secondary rate limit without a Retry-After header.
	defaultRateLimitWait = time.Minute
)

// GitHub opens and updates pull requests through the GitHub REST API (google/go-github).
type GitHub struct {
	client      *github.Client
	owner, repo string
	timeout     time.Duration
	clock       Clock
	log         *slog.Logger
}

// NewGitHub builds the client for cfg.GitHubRepo on github.com or the GitHub Enterprise server at
// cfg.GitHubAPIURL. The token is read from cfg.GitHubTokenFile at every request (rotation needs no
// restart) and sent as "Authorization: Bearer"; it never appears in a log or an error.
func NewGitHub(cfg Config, clock Clock, log *slog.Logger) (*GitHub, error) {
	owner, repo, err := splitRepo(cfg.GitHubRepo)
	if err != nil {
		return nil, fmt.Errorf("--%s: %w", FlagGitHubRepo, err)
	}
	hc := &http.Client{Transport: &tokenTransport{file: cfg.GitHubTokenFile, next: http.DefaultTransport}}
	client := github.NewClient(hc)
	if cfg.GitHubAPIURL != "" {
		if client, err = client.WithEnterpriseURLs(cfg.GitHubAPIURL, cfg.GitHubAPIURL); err != nil {
			return nil, fmt.Errorf("--%s: %w", FlagGitHubAPIURL, err)
		}
	}
	client.UserAgent = "recommender"
	return &GitHub{client: client, owner: owner, repo: repo, timeout: cfg.GitTimeout, clock: clock, log: log.With("component", "gitops")}, nil
}

// tokenTransport adds the bearer token read from a file.
type tokenTransport struct {
	file string
	next http.RoundTripper
}

func (t *tokenTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	tok, err := readSecret(t.file)
	if err != nil {
		return nil, fmt.Errorf("read --%s: %w", FlagGitHubTokenFile, err)
	}
	req = req.Clone(req.Context())
	req.Header.Set("Authorization", "Bearer "+tok)
	return t.next.RoundTrip(req)
}

// PullRequest is the wanted state of the pull request of one branch.
type PullRequest struct {
	Head   string // our branch, in the same repository
	Base   string
	Title  string
	Body   string
	Labels []string
}

// PullRequestRef is the pull request after EnsurePullRequest.
type PullRequestRef struct {
	Number  int
	URL     string
	Created bool // opened by this call
	Updated bool // title or body edited by this call
}

// EnsurePullRequest makes the open pull request from pr.Head into pr.Base have pr's title, body and
// labels: it edits the one that is open, or opens one. It never opens a second PR for a branch.
func (g *GitHub) EnsurePullRequest(ctx context.Context, pr PullRequest) (PullRequestRef, error) {
	var ref PullRequestRef
	var open []*github.PullRequest
	err := g.call(ctx, "list pull requests of "+pr.Head, func(ctx context.Context) (*github.Response, error) {
		var resp *github.Response
		var err error
		open, resp, err = g.client.PullRequests.List(ctx, g.owner, g.repo, &github.PullRequestListOptions{
			State: "open", Head: g.owner + ":" + pr.Head, Base: pr.Base,
		})
		return resp, err
	})
	if err != nil {
		return ref, err
	}
	var cur *github.PullRequest
	if len(open) > 0 {
		// The oldest one is the PR reviewers know; there is only one unless someone opened another by hand.
		cur = slices.MinFunc(open, func(a, b *github.PullRequest) int { return a.GetNumber() - b.GetNumber() })
		// Edited when what it describes changed; a body without our fingerprint (edited by hand,
		// or older) is compared whole.
		fp := bodyFingerprint(cur.GetBody())
		stale := cur.GetBody() != pr.Body
		if fp != "" {
			stale = fp != bodyFingerprint(pr.Body)
		}
		if cur.GetTitle() != pr.Title || stale {
			err := g.call(ctx, fmt.Sprintf("update pull request #%d", cur.GetNumber()), func(ctx context.Context) (*github.Response, error) {
				var resp *github.Response
				var err error
				cur, resp, err = g.client.PullRequests.Edit(ctx, g.owner, g.repo, cur.GetNumber(),
					&github.PullRequest{Title: github.Ptr(pr.Title), Body: github.Ptr(pr.Body)})
				return resp, err
			})
			if err != nil {
				return ref, err
			}
			ref.Updated = true
		}
	} else {
		err := g.call(ctx, "create pull request for "+pr.Head, func(ctx context.Context) (*github.Response, error) {
			var resp *github.Response
			var err error
			cur, resp, err = g.client.PullRequests.Create(ctx, g.owner, g.repo, &github.NewPullRequest{
				Title: github.Ptr(pr.Title), Head: github.Ptr(pr.Head), Base: github.Ptr(pr.Base), Body: github.Ptr(pr.Body),
				MaintainerCanModify: github.Ptr(true),
			})
			return resp, err
		})
		if err != nil {
			return ref, err
		}
		ref.Created = true
	}
	ref.Number, ref.URL = cur.GetNumber(), cur.GetHTMLURL()
	var missing []string
	for _, l := range pr.Labels {
		if !slices.ContainsFunc(cur.Labels, func(have *github.Label) bool { return have.GetName() == l }) {
			missing = append(missing, l)
		}
	}
	if len(missing) > 0 {
		err := g.call(ctx, fmt.Sprintf("label pull request #%d", ref.Number), func(ctx context.Context) (*github.Response, error) {
			_, resp, err := g.client.Issues.AddLabelsToIssue(ctx, g.owner, g.repo, ref.Number, missing)
			return resp, err
		})
		if err != nil {
			return ref, err
		}
	}
	return ref, nil
}

// call runs one API request with the per-call timeout, waiting and retrying while GitHub rate-limits it,
// and turns GitHub's errors into the package's sentinels.
func (g *GitHub) call(ctx context.Context, what string, fn func(context.Context) (*github.Response, error)) error {
	for attempt := 1; ; attempt++ {
		tctx, cancel := context.WithTimeout(ctx, g.timeout)
		// go-github would refuse requests by itself while it believes the limit is exhausted, using the
		// wall clock; the wait is decided here, with the injected clock.
		resp, err := fn(context.WithValue(tctx, github.BypassRateLimitCheck, true))
		cancel()
		if err == nil {
			return nil
		}
		wait, limited := g.rateLimitWait(resp)
		if !limited {
			return classify(what, resp, err)
		}
		if attempt > maxRateLimitRetries || wait > maxRateLimitWait {
			return fmt.Errorf("%s: %w (%d attempts, next try in %s): %s", what, ErrRateLimited, attempt, wait, githubMessage(err))
		}
		g.log.Warn("github rate limit, waiting", "call", what, "wait", wait, "attempt", attempt)
		if err := g.clock.Sleep(ctx, wait); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
}

// rateLimitWait follows GitHub's rules for rate-limited responses (403 or 429): wait Retry-After
// seconds if given; else until X-RateLimit-Reset when X-RateLimit-Remaining is 0; else a minute.
func (g *GitHub) rateLimitWait(resp *github.Response) (time.Duration, bool) {
	if resp == nil || resp.Response == nil {
		return 0, false
	}
	h := resp.Header
	retryAfter, remaining := h.Get("Retry-After"), h.Get("X-RateLimit-Remaining")
	switch {
	case resp.StatusCode == http.StatusTooManyRequests:
	case resp.StatusCode == http.StatusForbidden && (retryAfter != "" || remaining == "0"):
	default:
		return 0, false
	}
	if s, err := strconv.Atoi(retryAfter); err == nil && s >= 0 {
		return time.Duration(s) * time.Second, true
	}
	if reset, err := strconv.ParseInt(h.Get("X-RateLimit-Reset"), 10, 64); err == nil && remaining == "0" {
		return max(time.Unix(reset, 0).Sub(g.clock.Now()), time.Second), true
	}
	return defaultRateLimitWait, true
}

// classify maps an API failure to a sentinel, keeping GitHub's own message: for 422 it is the only
// explanation of what was invalid.
func classify(what string, resp *github.Response, err error) error {
	var sentinel error
	if resp != nil && resp.Response != nil {
		switch resp.StatusCode {
		case http.StatusUnauthorized:
			sentinel = ErrUnauthorized
		case http.StatusForbidden:
			sentinel = ErrForbidden
		case http.StatusNotFound:
			sentinel = ErrNotFound
		case http.StatusUnprocessableEntity:
			sentinel = ErrValidation
		}
	}
	if sentinel == nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return fmt.Errorf("%s: %w: %s", what, sentinel, githubMessage(err))
}

// githubMessage is the message of a GitHub error response with its validation errors.
func githubMessage(err error) string {
	var rl *github.RateLimitError
	var arl *github.AbuseRateLimitError
	var er *github.ErrorResponse
	switch {
	case errors.As(err, &rl):
		return rl.Message
	case errors.As(err, &arl):
		return arl.Message
	case errors.As(err, &er):
		msgs := []string{}
		if er.Message != "" {
			msgs = append(msgs, er.Message)
		}
		for _, e := range er.Errors {
			switch {
			case e.Message != "":
				msgs = append(msgs, e.Message)
			case e.Field != "":
				msgs = append(msgs, fmt.Sprintf("%s.%s: %s", e.Resource, e.Field, e.Code))
			case e.Code != "":
				msgs = append(msgs, e.Code)
			}
		}
		if len(msgs) == 0 {
			return http.StatusText(er.Response.StatusCode)
		}
		return strings.Join(msgs, ": ")
	}
	return err.Error()
}
