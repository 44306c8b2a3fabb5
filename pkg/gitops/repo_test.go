package gitops

import (
	"errors"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

func newTestPublisher(t *testing.T, cfg Config, clock Clock) *Publisher {
	t.Helper()
	log, _ := newTestLogger(t)
	p, err := New(cfg, clock, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func mustPublish(t *testing.T, p *Publisher, cs ChangeSet) Result {
	t.Helper()
	res, err := p.Publish(t.Context(), cs)
	if err != nil {
		t.Fatalf("Publish: %v", err)
	}
	return res
}

func branchResult(t *testing.T, res Result, branch string) BranchResult {
	t.Helper()
	for _, b := range res.Branches {
		if b.Branch == branch {
			return b
		}
	}
	t.Fatalf("no result for branch %s in %+v", branch, res)
	return BranchResult{}
}

// Ensure that a change set becomes one commit on top of the base branch, one file per policy under
// the directory of its state.
func TestPublishWritesBranch(t *testing.T) {
	remote := newTestRemote(t)
	p := newTestPublisher(t, testConfig(t, remote.bare), newFakeClock())

	res := mustPublish(t, p, ChangeSet{proposal("frontend", StateAudit, "r1"), proposal("backend", StateEnforced, "r2")})
	br := branchResult(t, res, ProposalsBranch)
	if !br.Pushed || br.Empty || br.Commit != remote.rev(t, ProposalsBranch) {
		t.Fatalf("proposals branch = %+v, remote at %s", br, remote.rev(t, ProposalsBranch))
	}
	if got, want := remote.rev(t, ProposalsBranch+"^"), remote.rev(t, "main"); got != want {
		t.Errorf("parent of %s = %s, want main %s", ProposalsBranch, got, want)
	}
	if remote.rev(t, ProposalsBranch+"^2") != "" || remote.rev(t, ProposalsBranch+"~2") != "" {
		t.Errorf("%s has more than one commit on main", ProposalsBranch)
	}
	want := []string{"README.md", "policies/audit/frontend.yaml", "policies/enforced/backend.yaml", "policies/reports/proposals.md"}
	if got := remote.tree(t, ProposalsBranch); !slices.Equal(got, want) {
		t.Errorf("files = %v, want %v", got, want)
	}
	// The branch carries its review, which --git-only users read instead of a PR body.
	if report := remote.show(t, ProposalsBranch, "policies/reports/proposals.md"); !strings.Contains(report, "## `frontend`") {
		t.Errorf("policies/reports/proposals.md lacks the section of frontend:\n%s", report)
	}
	content := remote.show(t, ProposalsBranch, "policies/audit/frontend.yaml")
	if !strings.HasPrefix(content, "# Managed by recommender: policy frontend, revision r1.\n") ||
		!strings.Contains(content, "kind: CiliumClusterwideNetworkPolicy\nmetadata:\n  name: frontend\n") {
		t.Errorf("frontend.yaml =\n%s", content)
	}
	msg := testGit(t, remote.bare, "log", "-1", "--format=%an <%ae>%n%B", ProposalsBranch)
	for _, s := range []string{
		"recommender <recommender@users.noreply.github.com>",
		"Network policy proposals: 2 added",
		"add policies/enforced/backend.yaml (revision r2)",
		"add policies/audit/frontend.yaml (revision r1)",
	} {
		if !strings.Contains(msg, s) {
			t.Errorf("commit message %q lacks %q", msg, s)
		}
	}
}

// Ensure that the same input twice makes no new commit and no push, also after a restart and
// whatever the order of the proposals.
func TestPublishIdempotent(t *testing.T) {
	remote := newTestRemote(t)
	cfg := testConfig(t, remote.bare)
	cs := ChangeSet{proposal("a", StateAudit, "r1"), proposal("b", StateAudit, "r1")}
	mustPublish(t, newTestPublisher(t, cfg, newFakeClock()), cs)
	tip := remote.rev(t, ProposalsBranch)

	p := newTestPublisher(t, cfg, newFakeClock())
	res := mustPublish(t, p, ChangeSet{cs[1], cs[0]})
	if br := branchResult(t, res, ProposalsBranch); br.Pushed || br.Commit != tip {
		t.Errorf("restarted publisher: %+v, want no push at %s", br, tip)
	}
	if res := mustPublish(t, p, cs); res.Status != StatusUnchanged || len(res.Branches) != 0 {
		t.Errorf("same change set again: %+v, want unchanged", res)
	}

	cfg.GitWorkDir = t.TempDir() // a fresh clone must reach the same verdict
	res = mustPublish(t, newTestPublisher(t, cfg, newFakeClock()), cs)
	if br := branchResult(t, res, ProposalsBranch); br.Pushed {
		t.Errorf("fresh clone: %+v, want no push", br)
	}
	if got := remote.rev(t, ProposalsBranch); got != tip {
		t.Errorf("branch moved to %s, want %s", got, tip)
	}
}

// Ensure that an enforced proposal for a policy audited on the base branch gets its own promotion
// branch moving the file, while the proposals branch leaves it alone.
func TestPublishPromotion(t *testing.T) {
	remote := newTestRemote(t)
	cfg := testConfig(t, remote.bare)
	p := newTestPublisher(t, cfg, newFakeClock())
	mustPublish(t, p, ChangeSet{proposal("a", StateAudit, "r1"), proposal("b", StateAudit, "r1")})
	remote.merge(t, ProposalsBranch)

	res := mustPublish(t, p, ChangeSet{proposal("a", StateEnforced, "r1"), proposal("b", StateAudit, "r1")})
	if br := branchResult(t, res, ProposalsBranch); !br.Empty || br.Pushed {
		t.Errorf("proposals branch = %+v, want empty", br)
	}
	promo := branchResult(t, res, PromotionBranch("a"))
	if !promo.Pushed || promo.Kind != KindPromotion || len(promo.Changes) != 1 || promo.Changes[0].Op != OpPromote {
		t.Fatalf("promotion branch = %+v", promo)
	}
	want := []string{"README.md", "policies/audit/b.yaml", "policies/enforced/a.yaml", "policies/reports/promote-a.md", "policies/reports/proposals.md"}
	if got := remote.tree(t, PromotionBranch("a")); !slices.Equal(got, want) {
		t.Errorf("files on %s = %v, want %v", PromotionBranch("a"), got, want)
	}
	diff := testGit(t, remote.bare, "diff", "--name-status", "-M", "main", PromotionBranch("a"))
	if !strings.HasPrefix(diff, "R") || !strings.Contains(diff, "policies/audit/a.yaml\tpolicies/enforced/a.yaml") {
		t.Errorf("diff main..%s = %q, want a rename of a.yaml", PromotionBranch("a"), diff)
	}
}

// Ensure that files of policies no longer proposed are removed, and files without our header are kept.
func TestPublishRemovesOnlyOurFiles(t *testing.T) {
	remote := newTestRemote(t)
	remote.commitFile(t, "policies/audit/handwritten.yaml", "kind: CiliumNetworkPolicy\n", "hand-written policy")
	p := newTestPublisher(t, testConfig(t, remote.bare), newFakeClock())
	mustPublish(t, p, ChangeSet{proposal("old", StateAudit, "r1"), proposal("keep", StateEnforced, "r1")})
	remote.merge(t, ProposalsBranch)

	res := mustPublish(t, p, ChangeSet{proposal("keep", StateEnforced, "r1")})
	br := branchResult(t, res, ProposalsBranch)
	if len(br.Changes) != 1 || br.Changes[0] != (Change{Policy: "old", Op: OpRemove, From: "policies/audit/old.yaml"}) {
		t.Errorf("changes = %+v, want removal of old", br.Changes)
	}
	want := []string{"README.md", "policies/audit/handwritten.yaml", "policies/enforced/keep.yaml", "policies/reports/proposals.md"}
	if got := remote.tree(t, ProposalsBranch); !slices.Equal(got, want) {
		t.Errorf("files = %v, want %v", got, want)
	}
}

// Ensure that our branch follows the base branch when another committer pushes to it.
func TestPublishRebasesOnBaseUpdate(t *testing.T) {
	remote := newTestRemote(t)
	cfg := testConfig(t, remote.bare)
	p := newTestPublisher(t, cfg, newFakeClock())
	mustPublish(t, p, ChangeSet{proposal("a", StateAudit, "r1")})
	remote.commitFile(t, "docs/NOTES.md", "unrelated\n", "unrelated change")

	res := mustPublish(t, p, ChangeSet{proposal("a", StateAudit, "r2")})
	if br := branchResult(t, res, ProposalsBranch); !br.Pushed {
		t.Fatalf("proposals branch = %+v, want a push", br)
	}
	if got, want := remote.rev(t, ProposalsBranch+"^"), remote.rev(t, "main"); got != want {
		t.Errorf("parent = %s, want new main %s", got, want)
	}
	if got := remote.show(t, ProposalsBranch, "policies/audit/a.yaml"); !strings.Contains(got, "revision r2") {
		t.Errorf("a.yaml = %q, want revision r2", got)
	}
	if !slices.Contains(remote.tree(t, ProposalsBranch), "docs/NOTES.md") {
		t.Errorf("rebased branch lacks the other committer's file")
	}
	// Same input, but the base moved again: the branch is rebased, so it is pushed once more.
	remote.commitFile(t, "docs/NOTES.md", "unrelated, again\n", "another unrelated change")
	res = mustPublish(t, newTestPublisher(t, cfg, newFakeClock()), ChangeSet{proposal("a", StateAudit, "r2")})
	if br := branchResult(t, res, ProposalsBranch); !br.Pushed || remote.rev(t, ProposalsBranch+"^") != remote.rev(t, "main") {
		t.Errorf("after base moved: %+v, want a push on top of main", br)
	}
}

// Ensure that a change by another committer to a file our branch changes too is a conflict error
// naming the file, and that the remote branch is left as it was.
func TestPublishConflict(t *testing.T) {
	remote := newTestRemote(t)
	cfg := testConfig(t, remote.bare)
	p := newTestPublisher(t, cfg, newFakeClock())
	mustPublish(t, p, ChangeSet{proposal("a", StateAudit, "r1"), proposal("b", StateAudit, "r1")})
	tip := remote.rev(t, ProposalsBranch)
	remote.commitFile(t, "policies/audit/a.yaml", "# tuned by hand\nkind: CiliumClusterwideNetworkPolicy\n", "tune a")

	_, err := p.Publish(t.Context(), ChangeSet{proposal("a", StateAudit, "r2"), proposal("b", StateAudit, "r1")})
	var ce *ConflictError
	if !errors.As(err, &ce) || !errors.Is(err, ErrConflict) {
		t.Fatalf("Publish error = %v, want a *ConflictError", err)
	}
	if !slices.Equal(ce.Files, []string{"policies/audit/a.yaml"}) || ce.Branch != ProposalsBranch || ce.Base != "main" {
		t.Errorf("conflict = %+v", ce)
	}
	if !strings.Contains(err.Error(), "policies/audit/a.yaml") {
		t.Errorf("error %q does not name the file", err)
	}
	if got := remote.rev(t, ProposalsBranch); got != tip {
		t.Errorf("branch moved to %s after a conflict, want %s", got, tip)
	}
	// The work tree is usable again: once the branch is gone, the next cycle starts from main.
	testGit(t, remote.bare, "branch", "-D", ProposalsBranch)
	res, err := p.Flush(t.Context())
	if err != nil {
		t.Fatalf("Flush after deleting the branch: %v", err)
	}
	if br := branchResult(t, res, ProposalsBranch); !br.Pushed {
		t.Errorf("after the branch was deleted: %+v, want a push", br)
	}
}

// Ensure that at most one publication happens per --pr-interval, that a deferred change set is
// published by Flush once due, and that an unchanged one is not published again.
func TestPublishInterval(t *testing.T) {
	remote := newTestRemote(t)
	cfg := testConfig(t, remote.bare)
	cfg.PRInterval = 10 * time.Minute
	clock := newFakeClock()
	start := clock.Now()
	p := newTestPublisher(t, cfg, clock)

	if res := mustPublish(t, p, ChangeSet{proposal("a", StateAudit, "r1")}); res.Status != StatusPublished {
		t.Fatalf("first publish: %+v", res)
	}
	clock.Advance(time.Minute)
	res := mustPublish(t, p, ChangeSet{proposal("a", StateAudit, "r2")})
	if res.Status != StatusDeferred || !res.NextAt.Equal(start.Add(10*time.Minute)) {
		t.Fatalf("second publish: %+v, want deferred until %s", res, start.Add(10*time.Minute))
	}
	clock.Advance(4 * time.Minute)
	if res, err := p.Flush(t.Context()); err != nil || res.Status != StatusDeferred {
		t.Fatalf("early Flush = %+v, %v, want deferred", res, err)
	}
	if got := remote.show(t, ProposalsBranch, "policies/audit/a.yaml"); !strings.Contains(got, "revision r1") {
		t.Fatalf("deferred change set was pushed: %q", got)
	}
	clock.Advance(5 * time.Minute)
	if res, err := p.Flush(t.Context()); err != nil || res.Status != StatusPublished {
		t.Fatalf("due Flush = %+v, %v, want published", res, err)
	}
	if got := remote.show(t, ProposalsBranch, "policies/audit/a.yaml"); !strings.Contains(got, "revision r2") {
		t.Errorf("after Flush a.yaml = %q, want revision r2", got)
	}
	clock.Advance(time.Hour)
	if res := mustPublish(t, p, ChangeSet{proposal("a", StateAudit, "r2")}); res.Status != StatusUnchanged {
		t.Errorf("unchanged change set: %+v, want unchanged", res)
	}
}

// Ensure that invalid change sets are rejected before anything is written.
func TestPublishRejectsInvalidChangeSet(t *testing.T) {
	remote := newTestRemote(t)
	p := newTestPublisher(t, testConfig(t, remote.bare), newFakeClock())
	bad := proposal("a", StateAudit, "r1")
	bad.State = "staged"
	for name, tc := range map[string]struct {
		cs   ChangeSet
		want error
	}{
		"bad name":  {ChangeSet{proposal("../etc", StateAudit, "r1")}, ErrInvalidName},
		"duplicate": {ChangeSet{proposal("a", StateAudit, "r1"), proposal("a", StateEnforced, "r1")}, ErrDuplicateName},
		"bad state": {ChangeSet{bad}, ErrInvalidState},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := p.Publish(t.Context(), tc.cs); !errors.Is(err, tc.want) {
				t.Errorf("Publish = %v, want %v", err, tc.want)
			}
		})
	}
	if got := remote.rev(t, ProposalsBranch); got != "" {
		t.Errorf("branch %s exists after invalid input", ProposalsBranch)
	}
}

// Ensure that a missing base branch is reported as such.
func TestPublishMissingBaseBranch(t *testing.T) {
	remote := newTestRemote(t)
	cfg := testConfig(t, remote.bare)
	cfg.GitBranch = "production"
	_, err := newTestPublisher(t, cfg, newFakeClock()).Publish(t.Context(), ChangeSet{proposal("a", StateAudit, "r1")})
	if !errors.Is(err, ErrBaseBranch) || !strings.Contains(err.Error(), `"production"`) {
		t.Errorf("Publish = %v, want ErrBaseBranch naming the branch", err)
	}
}

// Ensure that a push the remote refuses is reported as ErrPushRejected and retried by the next Flush.
func TestPublishPushRejected(t *testing.T) {
	remote := newTestRemote(t)
	hook := remote.bare + "/hooks/pre-receive"
	if err := writeFile(hook, "#!/bin/sh\necho 'branch protection: pushes paused' >&2\nexit 1\n"); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(hook, 0o755); err != nil {
		t.Fatal(err)
	}
	p := newTestPublisher(t, testConfig(t, remote.bare), newFakeClock())
	_, err := p.Publish(t.Context(), ChangeSet{proposal("a", StateAudit, "r1")})
	if !errors.Is(err, ErrPushRejected) || !strings.Contains(err.Error(), "pushes paused") {
		t.Fatalf("Publish = %v, want ErrPushRejected with the remote's message", err)
	}
	if err := os.Remove(hook); err != nil {
		t.Fatal(err)
	}
	res, err := p.Flush(t.Context())
	if err != nil || !branchResult(t, res, ProposalsBranch).Pushed {
		t.Errorf("Flush after the remote accepts again = %+v, %v, want a push", res, err)
	}
}

// Ensure the first publication of a store that proposes nothing yet, into a repository without
// a policy directory, succeeds with nothing to push (it failed with git's "pathspec did not
// match any files", issue 20).
func TestPublishNothingIntoEmptyRepository(t *testing.T) {
	remote := newTestRemote(t)
	p := newTestPublisher(t, testConfig(t, remote.bare), newFakeClock())
	res := mustPublish(t, p, ChangeSet{})
	if br := branchResult(t, res, ProposalsBranch); !br.Empty || br.Pushed {
		t.Errorf("proposals branch = %+v, want empty and not pushed", br)
	}
}

// nsProposal is a CiliumNetworkPolicy proposal in namespace ns.
func nsProposal(ns, name string, state State, rev string) Proposal {
	p := proposal(name, state, rev)
	p.Namespace = ns
	p.YAML = []byte("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: " + name + "\n  namespace: " + ns + "\nspec: {}\n")
	return p
}

// Ensure CiliumNetworkPolicies land per namespace (<git-path>/<namespace>/audit|enforced/), are
// promoted within their namespace, and that switching from CCNPs removes the clusterwide files
// of ours while leaving others' files, in any namespace directory, alone.
func TestPublishNamespacedLayout(t *testing.T) {
	remote := newTestRemote(t)
	remote.commitFile(t, "policies/shop/audit/handwritten.yaml", "kind: CiliumNetworkPolicy\n", "hand-written policy")
	p := newTestPublisher(t, testConfig(t, remote.bare), newFakeClock())
	mustPublish(t, p, ChangeSet{proposal("shop-web", StateAudit, "r1")})
	remote.merge(t, ProposalsBranch)

	res := mustPublish(t, p, ChangeSet{nsProposal("shop", "shop-web", StateAudit, "r1"), nsProposal("bank", "bank-api", StateEnforced, "r2")})
	br := branchResult(t, res, ProposalsBranch)
	want := []string{"README.md", "policies/bank/enforced/bank-api.yaml", "policies/reports/proposals.md",
		"policies/shop/audit/handwritten.yaml", "policies/shop/audit/shop-web.yaml"}
	if got := remote.tree(t, ProposalsBranch); !slices.Equal(got, want) {
		t.Errorf("files = %v, want %v", got, want)
	}
	ops := map[string]Op{}
	for _, c := range br.Changes {
		ops[c.From+">"+c.To] = c.Op
	}
	wantOps := map[string]Op{
		">policies/bank/enforced/bank-api.yaml": OpAdd,
		">policies/shop/audit/shop-web.yaml":    OpAdd,
		"policies/audit/shop-web.yaml>":         OpRemove, // the CCNP of the same name is another policy
	}
	if !maps.Equal(ops, wantOps) {
		t.Errorf("changes = %v, want %v", ops, wantOps)
	}
	remote.merge(t, ProposalsBranch)

	res = mustPublish(t, p, ChangeSet{nsProposal("shop", "shop-web", StateEnforced, "r1"), nsProposal("bank", "bank-api", StateEnforced, "r2")})
	promo := branchResult(t, res, PromotionBranch("shop-web"))
	if len(promo.Changes) != 1 || promo.Changes[0].From != "policies/shop/audit/shop-web.yaml" || promo.Changes[0].To != "policies/shop/enforced/shop-web.yaml" {
		t.Errorf("promotion = %+v, want shop/audit -> shop/enforced", promo.Changes)
	}

	bad := nsProposal("Shop", "x", StateAudit, "r")
	if _, err := p.Publish(t.Context(), ChangeSet{bad}); !errors.Is(err, ErrInvalidName) {
		t.Errorf("Publish with namespace %q = %v, want ErrInvalidName", bad.Namespace, err)
	}
}
