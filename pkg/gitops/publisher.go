package gitops

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// PullRequester opens or updates the pull request of a branch; *GitHub implements it.
type PullRequester interface {
	EnsurePullRequest(ctx context.Context, pr PullRequest) (PullRequestRef, error)
}

// Status says what a Publish or Flush call did.
type Status string

const (
	// StatusPublished: branches were written (pushed where their content changed) and PRs ensured.
	StatusPublished Status = "published"
	// StatusUnchanged: the change set equals the last one published; nothing was done.
	StatusUnchanged Status = "unchanged"
	// StatusDeferred: the change set is kept and published by a Flush at or after Result.NextAt.
	StatusDeferred Status = "deferred"
)

// Result reports one Publish or Flush call.
type Result struct {
	Status Status
	// NextAt is when a deferred change set may be published.
	NextAt time.Time
	// Branches holds one entry per branch written, proposals first, then promotions by policy.
	Branches []BranchResult
}

// BranchResult is the outcome for one branch.
type BranchResult struct {
	Branch  string
	Kind    Kind
	Changes []Change
	Commit  string // tip of the branch; empty when Empty
	Pushed  bool   // a new commit was pushed; false when the branch already held this content
	Empty   bool   // the base branch already holds this content: no branch, no pull request
	// CompareURL is set with --git-only: where to open the pull request by hand.
	CompareURL string
	// PullRequest is the ensured pull request; nil with --git-only or when Empty.
	PullRequest *PullRequestRef
}

// Publisher turns change sets into branches and pull requests, at most once per --pr-interval.
// It remembers the last published change set (names, states, revisions) and skips identical ones, so
// evidence that grows under an unchanged policy does not churn the pull request.
type Publisher struct {
	cfg   Config
	repo  *Repo
	prs   PullRequester // nil with --git-only
	clock Clock
	log   *slog.Logger
	m     *metrics

	// mu serializes publications and guards pending, pendingFP, published and lastAttempt.
	mu          sync.Mutex
	pending     ChangeSet
	pendingFP   string
	published   string    // fingerprint of the last change set published without error
	lastAttempt time.Time // start of the last publication, successful or not
}

// NewPublisher wires a Publisher. prs may be nil only with cfg.GitOnly. Metrics are registered
// on reg (nil: not exported).
func NewPublisher(cfg Config, repo *Repo, prs PullRequester, clock Clock, log *slog.Logger, reg prometheus.Registerer) (*Publisher, error) {
	if prs == nil && !cfg.GitOnly {
		return nil, fmt.Errorf("a pull request client is required unless --%s", FlagGitOnly)
	}
	return &Publisher{cfg: cfg, repo: repo, prs: prs, clock: clock, log: log.With("component", "gitops"), m: newMetrics(reg)}, nil
}

// New builds the Publisher cfg describes: a Repo, and a GitHub client unless cfg.GitOnly.
// cfg must have passed Validate. Close releases the work directory.
func New(cfg Config, clock Clock, log *slog.Logger, reg prometheus.Registerer) (*Publisher, error) {
	repo, err := NewRepo(cfg, log)
	if err != nil {
		return nil, err
	}
	var prs PullRequester
	if !cfg.GitOnly {
		gh, err := NewGitHub(cfg, clock, log)
		if err != nil {
			return nil, errors.Join(err, repo.Close())
		}
		prs = gh
	}
	p, err := NewPublisher(cfg, repo, prs, clock, log, reg)
	if err != nil {
		return nil, errors.Join(err, repo.Close())
	}
	return p, nil
}

// Close releases the work directory if it is temporary.
func (p *Publisher) Close() error { return p.repo.Close() }

// Publish offers the complete change set and publishes it unless it equals the last one published or
// the last publication is less than --pr-interval ago; then it is kept for Flush (a newer Publish
// replaces it). An invalid change set is rejected without touching what is pending.
func (p *Publisher) Publish(ctx context.Context, cs ChangeSet) (Result, error) {
	ncs, err := cs.normalize()
	if err != nil {
		return Result{}, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pending, p.pendingFP = ncs, ncs.fingerprint()
	res, err := p.flushLocked(ctx)
	p.m.observe(res, err)
	return res, err
}

// Flush publishes the pending change set if it is due. The daemon calls it on a ticker so that a
// deferred change set goes out without waiting for the next Publish.
func (p *Publisher) Flush(ctx context.Context) (Result, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	res, err := p.flushLocked(ctx)
	if p.pending != nil || err != nil || res.Status == StatusPublished {
		p.m.observe(res, err) // an idle Flush is no publication
	}
	return res, err
}

func (p *Publisher) flushLocked(ctx context.Context) (Result, error) {
	if p.pending == nil || p.pendingFP == p.published {
		p.pending = nil
		return Result{Status: StatusUnchanged}, nil
	}
	now := p.clock.Now()
	if next := p.lastAttempt.Add(p.cfg.PRInterval); !p.lastAttempt.IsZero() && now.Before(next) {
		p.log.Debug("publication deferred", "until", next)
		return Result{Status: StatusDeferred, NextAt: next}, nil
	}
	p.lastAttempt = now
	branches, err := p.publish(ctx, p.pending)
	if err != nil {
		// The change set stays pending: the next Flush after the interval retries it.
		return Result{Status: StatusPublished, Branches: branches}, err
	}
	p.published, p.pending = p.pendingFP, nil
	return Result{Status: StatusPublished, Branches: branches}, nil
}

// publish writes every branch the change set needs and ensures its pull request. A failure on one
// branch (a conflict, say) does not stop the others; all failures are returned joined.
func (p *Publisher) publish(ctx context.Context, cs ChangeSet) ([]BranchResult, error) {
	s, err := p.repo.open(ctx)
	if err != nil {
		return nil, err
	}
	base, err := s.baseFiles(ctx)
	if err != nil {
		return nil, err
	}
	pl := makePlan(p.cfg.GitPath, base, cs)
	var out []BranchResult
	var errs []error
	for _, spec := range append([]branchSpec{pl.Proposals}, pl.Promotions...) {
		br, err := p.publishBranch(ctx, s, spec)
		out = append(out, br)
		if err != nil {
			errs = append(errs, err)
		}
	}
	return out, errors.Join(errs...)
}

func (p *Publisher) publishBranch(ctx context.Context, s *session, spec branchSpec) (BranchResult, error) {
	br := BranchResult{Branch: spec.Branch, Kind: spec.Kind, Changes: spec.Changes}
	body := prBody(spec.Kind, spec.Changes)
	spec.Report = []byte(body)
	w, err := s.write(ctx, spec)
	if err != nil {
		return br, err
	}
	br.Commit, br.Pushed, br.Empty = w.Commit, w.Pushed, w.Empty
	if w.Empty {
		return br, nil
	}
	if p.prs == nil {
		br.CompareURL = compareURL(&p.cfg, spec.Branch)
		if w.Pushed {
			p.log.Info("branch ready for a pull request", "branch", spec.Branch, "compare_url", br.CompareURL)
		}
		return br, nil
	}
	// Always ensured, not only after a push: a crash between push and PR creation must heal.
	ref, err := p.prs.EnsurePullRequest(ctx, PullRequest{
		Head:   spec.Branch,
		Base:   p.cfg.GitBranch,
		Title:  title(spec.Kind, spec.Changes),
		Body:   body,
		Labels: []string{LabelNetworkPolicy, string(spec.Kind)},
	})
	if err != nil {
		return br, err
	}
	br.PullRequest = &ref
	switch {
	case ref.Created:
		p.log.Info("pull request opened", "branch", spec.Branch, "pr", ref.Number, "url", ref.URL)
	case ref.Updated:
		p.log.Info("pull request updated", "branch", spec.Branch, "pr", ref.Number, "url", ref.URL)
	}
	return br, nil
}

// compareURL is the web page to open a pull request from branch: on --github-repo (github.com or the
// Enterprise host of --github-api-url), else on the host of --git-url. Empty for a local remote.
func compareURL(cfg *Config, branch string) string {
	web, repo := "", ""
	if cfg.GitHubRepo != "" {
		web, repo = "https://github.com", cfg.GitHubRepo
		if cfg.GitHubAPIURL != "" {
			web = strings.TrimSuffix(strings.TrimSuffix(cfg.GitHubAPIURL, "/"), "/api/v3")
		}
	} else {
		web, repo = webOfRemote(cfg.GitURL)
	}
	if web == "" || repo == "" {
		return ""
	}
	return web + "/" + repo + "/compare/" + cfg.GitBranch + "..." + branch
}

// webOfRemote derives https://host and owner/repo from a git URL.
func webOfRemote(raw string) (web, repo string) {
	var host, p string
	switch kind, err := remoteKind(raw); {
	case err != nil || kind == remoteLocal:
		return "", ""
	case scpLike(raw):
		userHost, rest, _ := strings.Cut(raw, ":")
		_, host, _ = strings.Cut(userHost, "@")
		if host == "" {
			host = userHost
		}
		p = rest
	default:
		u, err := url.Parse(raw)
		if err != nil {
			return "", ""
		}
		host, p = u.Host, u.Path
		if kind == remoteSSH {
			host = u.Hostname() // an ssh port says nothing about the web port
		}
		if kind == remoteHTTP {
			host = u.Scheme + "://" + host
		}
	}
	if !strings.Contains(host, "://") {
		host = "https://" + host
	}
	p = strings.TrimSuffix(strings.Trim(p, "/"), ".git")
	if p == "" {
		return "", ""
	}
	return host, p
}
