package daemon

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/recommender/recommender/pkg/gitops"
	"github.com/recommender/recommender/pkg/lifecycle"
	"github.com/recommender/recommender/pkg/synth"
)

// policyRepo is a bare git repository with one commit on main, as a policy repository starts.
type policyRepo struct {
	t    *testing.T
	bare string
}

func newPolicyRepo(t *testing.T) *policyRepo {
	t.Helper()
	dir := t.TempDir()
	r := &policyRepo{t: t, bare: filepath.Join(dir, "policies.git")}
	r.git("init", "--quiet", "--bare", "--initial-branch=main", r.bare)
	work := filepath.Join(dir, "work")
	r.git("clone", "--quiet", r.bare, work)
	if err := os.WriteFile(filepath.Join(work, "README.md"), []byte("policies\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r.git("-C", work, "add", "README.md")
	r.git("-C", work, "commit", "--quiet", "-m", "init")
	r.git("-C", work, "push", "--quiet", "origin", "main")
	return r
}

func (r *policyRepo) git(args ...string) string {
	r.t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "HOME="+r.t.TempDir(),
		"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com")
	out, err := cmd.CombinedOutput()
	if err != nil {
		r.t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// show returns a file of a branch.
func (r *policyRepo) show(branch, file string) string {
	r.t.Helper()
	return r.git("--git-dir", r.bare, "show", branch+":"+file)
}

// merge fast-forwards main to branch, as a reviewer merging the pull request.
func (r *policyRepo) merge(branch string) {
	r.t.Helper()
	r.git("--git-dir", r.bare, "update-ref", "refs/heads/main", "refs/heads/"+branch)
}

// runWithGitOps runs the daemon once over a recording with --git-only delivery into repo.
func runWithGitOps(t *testing.T, db, recording string, repo *policyRepo) *prometheus.Registry {
	t.Helper()
	return runWithGitOpsKind(t, db, recording, repo, synth.KindCCNP)
}

// runWithGitOpsKind is runWithGitOps writing policies of kind (--policy-kind).
func runWithGitOpsKind(t *testing.T, db, recording string, repo *policyRepo, kind synth.PolicyKind) *prometheus.Registry {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	d, closeDeps := openDeps(t, depsConfig{db: db, recording: recording, reg: reg})
	defer closeDeps()
	gc := gitops.DefaultConfig()
	gc.GitURL, gc.GitWorkDir, gc.GitOnly, gc.PRInterval = repo.bare, t.TempDir(), true, 0
	if err := gc.Validate(); err != nil {
		t.Fatal(err)
	}
	pub, err := gitops.New(gc, gitops.SystemClock{}, d.Log, reg)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	d.Publisher = pub
	sc := synth.DefaultConfig()
	sc.MinObserve, sc.PolicyKind = 0, kind
	dm, err := New(Config{
		SyncInterval: time.Hour, // synced at the recording's start and end only
		Once:         true,
		Lifecycle:    lifecycle.Config{Window: time.Minute, MaxFlowGap: 5 * time.Minute, MinWindowFlows: 1, MaxLostRatio: 0.01, Learn: true},
		Synth:        sc,
	}, d)
	if err != nil {
		t.Fatal(err)
	}
	if err := dm.Run(t.Context()); err != nil {
		t.Fatalf("daemon: %v", err)
	}
	return reg
}

// shiftDays writes recording with every date moved by days, as the same traffic a day later.
func shiftDays(t *testing.T, recording, to string, from, into string) {
	t.Helper()
	b, err := os.ReadFile(recording)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(from)) {
		t.Fatalf("%s holds no %s", recording, from)
	}
	if err := os.WriteFile(to, bytes.ReplaceAll(b, []byte(from), []byte(into)), 0o600); err != nil {
		t.Fatal(err)
	}
}

// Ensure the reviews a policy repository receives tell the truth through a whole lifecycle:
// learn, a would-be-denied flow in audit, the edge learned, a clean window, promotion. Each
// rule shows its own first and last flow, the would-be-denied flow is listed, and the
// promotion shows the window that promoted it (issue 20). Golden files: -update.
func TestGitOpsEvidenceThroughLifecycle(t *testing.T) {
	repo := newPolicyRepo(t)
	dir := t.TempDir()
	db := filepath.Join(dir, "store.db")

	// Day one: proposals in audit; a reviewer merges them.
	runWithGitOps(t, db, filepath.Join(recordings, "boutique.jsonl"), repo)
	golden(t, "gitops-day1-proposals", repo.show(gitops.ProposalsBranch, "policies/reports/proposals.md"))
	repo.merge(gitops.ProposalsBranch)

	// Day three: recommendationservice calls the API server, which its revision would deny;
	// the edge is learned into a new revision. The others' windows are clean: promoted.
	runWithGitOps(t, db, filepath.Join(recordings, "boutique-newconn.jsonl"), repo)
	day3 := repo.show(gitops.ProposalsBranch, "policies/reports/proposals.md")
	golden(t, "gitops-day3-proposals", day3)
	if !strings.Contains(day3, "entity:kube-apiserver") || !strings.Contains(day3, "learned") {
		t.Errorf("day-3 review does not list the would-be-denied flow to the API server as learned")
	}
	repo.merge(gitops.ProposalsBranch)

	// Day four: the same traffic; the learned revision's window is clean and it is promoted.
	day4 := filepath.Join(dir, "day4.jsonl")
	shiftDays(t, filepath.Join(recordings, "boutique-newconn.jsonl"), day4, "2026-03-04T", "2026-03-05T")
	reg := runWithGitOps(t, db, day4, repo)
	if got := gauge(t, reg, "recommender_gitops_branch_pushes_total", nil); got < 1 {
		t.Errorf("recommender_gitops_branch_pushes_total = %v after a promotion was pushed, want at least 1", got)
	}
	branch := gitops.PromotionBranch("boutique-recommendationservice")
	promo := repo.show(branch, "policies/reports/promote-boutique-recommendationservice.md")
	golden(t, "gitops-day4-promotion", promo)
	if strings.Contains(promo, "Not ready") || !strings.Contains(promo, "Ready for promotion") {
		t.Errorf("promotion review does not show the clean window that promoted it:\n%s", promo)
	}
}

// golden compares got with testdata/<name>.golden (-update rewrites it).
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from %s (run with -update and review the diff):\n%s", name, path, got)
	}
}

// Ensure --policy-kind CiliumNetworkPolicy publishes each policy as a CNP in its workload's
// namespace directory (<git-path>/<namespace>/audit/<name>.yaml), the file a team applies.
func TestGitOpsNamespaced(t *testing.T) {
	repo := newPolicyRepo(t)
	runWithGitOpsKind(t, filepath.Join(t.TempDir(), "store.db"), filepath.Join(recordings, "boutique.jsonl"), repo, synth.KindCNP)
	files := strings.Fields(repo.git("--git-dir", repo.bare, "ls-tree", "-r", "--name-only", gitops.ProposalsBranch))
	policies := 0
	for _, f := range files {
		if !strings.HasSuffix(f, ".yaml") {
			continue
		}
		policies++
		parts := strings.Split(f, "/") // policies/<namespace>/audit/<name>.yaml
		if len(parts) != 4 || parts[2] != "audit" {
			t.Errorf("policy file %s, want policies/<namespace>/audit/<name>.yaml", f)
			continue
		}
		body := repo.show(gitops.ProposalsBranch, f)
		if !strings.Contains(body, "kind: CiliumNetworkPolicy") || !strings.Contains(body, "  namespace: "+parts[1]+"\n") {
			t.Errorf("%s is not a CiliumNetworkPolicy in %s:\n%s", f, parts[1], body)
		}
	}
	if policies == 0 {
		t.Errorf("no policy files on %s: %v", gitops.ProposalsBranch, files)
	}
}
