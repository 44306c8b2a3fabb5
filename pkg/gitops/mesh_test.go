package gitops

import (
	"slices"
	"strings"
	"testing"
)

// Ensure two daemons of a ClusterMesh writing to one repository (--git-path clusters/a and
// clusters/b) push separate branches and never add, change or remove each other's files, also
// after their branches were merged and one of them retires its policies (issue 16).
func TestPublishTwoClustersOneRepository(t *testing.T) {
	remote := newTestRemote(t)
	cfgA, cfgB := testConfig(t, remote.bare), testConfig(t, remote.bare)
	cfgA.GitPath, cfgB.GitPath = "clusters/a", "clusters/b"
	a := newTestPublisher(t, cfgA, newFakeClock())
	b := newTestPublisher(t, cfgB, newFakeClock())

	resA := mustPublish(t, a, ChangeSet{proposal("shop-web", StateAudit, "r1"), proposal("shop-db", StateEnforced, "r1")})
	resB := mustPublish(t, b, ChangeSet{proposal("shop-web", StateAudit, "r2")}) // same policy name, other cluster
	brA := branchResult(t, resA, "recommender/clusters-a/proposals")
	brB := branchResult(t, resB, "recommender/clusters-b/proposals")
	if !brA.Pushed || !brB.Pushed {
		t.Fatalf("branches not pushed: a %+v, b %+v", brA, brB)
	}
	// only checks that branch changes files under prefix and nothing else, relative to main.
	only := func(branch, prefix string) {
		t.Helper()
		diff := strings.Fields(testGit(t, remote.bare, "diff", "--name-only", "main", branch))
		if len(diff) == 0 {
			t.Errorf("%s changes nothing", branch)
		}
		for _, f := range diff {
			if !strings.HasPrefix(f, prefix) {
				t.Errorf("%s changes %s, outside %s", branch, f, prefix)
			}
		}
	}
	// B's push left A's branch as A wrote it.
	if got := remote.rev(t, brA.Branch); got != brA.Commit {
		t.Errorf("%s moved to %s after the other cluster published, want %s", brA.Branch, got, brA.Commit)
	}
	only(brA.Branch, "clusters/a/")
	only(brB.Branch, "clusters/b/")
	for _, f := range remote.tree(t, brA.Branch) {
		if f != "README.md" && !strings.HasPrefix(f, "clusters/a/") {
			t.Errorf("%s holds %s, outside clusters/a/", brA.Branch, f)
		}
	}

	remote.merge(t, brA.Branch)
	remote.merge(t, brB.Branch)
	want := []string{"README.md", "clusters/a/audit/shop-web.yaml", "clusters/a/enforced/shop-db.yaml", "clusters/a/reports/proposals.md",
		"clusters/b/audit/shop-web.yaml", "clusters/b/reports/proposals.md"}
	if got := remote.tree(t, "main"); !slices.Equal(got, want) {
		t.Fatalf("main after both merges = %v, want %v", got, want)
	}

	// A retires everything: its branch removes its own files only, B's stay.
	resA = mustPublish(t, a, ChangeSet{})
	brA = branchResult(t, resA, "recommender/clusters-a/proposals")
	for _, c := range brA.Changes {
		if c.Op != OpRemove || !strings.HasPrefix(c.From, "clusters/a/") {
			t.Errorf("change %+v, want only removals under clusters/a/", c)
		}
	}
	if len(brA.Changes) != 2 {
		t.Errorf("changes = %+v, want the removal of A's two policies", brA.Changes)
	}
	only(brA.Branch, "clusters/a/")
	for _, f := range []string{"clusters/b/audit/shop-web.yaml", "clusters/b/reports/proposals.md"} {
		if !slices.Contains(remote.tree(t, brA.Branch), f) {
			t.Errorf("%s lost %s of the other cluster", brA.Branch, f)
		}
	}
	// B publishing the same again changes nothing.
	if res := mustPublish(t, b, ChangeSet{proposal("shop-web", StateAudit, "r2")}); res.Status != StatusUnchanged && len(branchResult(t, res, brB.Branch).Changes) != 0 {
		t.Errorf("B republished: %+v, want no change", res)
	}
}
