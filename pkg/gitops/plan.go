package gitops

import (
	"bytes"
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"
)

// Kind is the kind of pull request a branch is for; it is also the PR's second label.
type Kind string

const (
	// KindProposals is the one pull request carrying new, changed, demoted and removed policies.
	KindProposals Kind = "audit"
	// KindPromotion is the pull request moving one policy from audit/ to enforced/.
	KindPromotion Kind = "promotion"
)

// Op is what a change does to a policy file.
type Op string

const (
	OpAdd     Op = "add"
	OpUpdate  Op = "update"
	OpRemove  Op = "remove"
	OpPromote Op = "promote" // audit/ -> enforced/
	OpDemote  Op = "demote"  // enforced/ -> audit/
)

// Change is one policy changed by a branch.
type Change struct {
	Policy string
	Op     Op
	// From and To are repository paths; From is empty for OpAdd, To for OpRemove.
	From, To string
	// Proposal is the proposal behind the change; nil for OpRemove.
	Proposal *Proposal
}

// headerPrefix starts every file we write; files without it are not ours and never touched.
const headerPrefix = "# Managed by recommender"

func isManaged(content []byte) bool { return bytes.HasPrefix(content, []byte(headerPrefix)) }

// render is the file content of a proposal: the managed-by header, then the YAML as given.
func render(p *Proposal) []byte {
	var b bytes.Buffer
	b.WriteString(headerPrefix)
	fmt.Fprintf(&b, ": policy %s", p.Name)
	if p.Revision != "" {
		fmt.Fprintf(&b, ", revision %s", p.Revision)
	}
	b.WriteString(".\n# Changes arrive as pull requests; edits to this file are replaced by the next one.\n")
	b.Write(p.YAML)
	if !bytes.HasSuffix(p.YAML, []byte("\n")) {
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// policyPath is where a policy's file lives: <git-path>/<state>/<name>.yaml, or
// <git-path>/<namespace>/<state>/<name>.yaml for a CiliumNetworkPolicy.
func policyPath(gitPath string, s State, ns, name string) string {
	return path.Join(gitPath, ns, string(s), name+".yaml")
}

// policyOf is the policy name of a managed file path.
func policyOf(p string) string { return strings.TrimSuffix(path.Base(p), ".yaml") }

// policyKeyOf is "<namespace>/<name>" for a namespaced policy file (policyPath), the name
// otherwise: a CNP and a CCNP of one name (after --policy-kind changed) are two policies.
func policyKeyOf(gitPath, p string) string {
	dir := path.Dir(path.Dir(p)) // <git-path> or <git-path>/<namespace>
	if dir == path.Clean(gitPath) {
		return policyOf(p)
	}
	return path.Base(dir) + "/" + policyOf(p)
}

func (p *Proposal) key() string {
	if p.Namespace == "" {
		return p.Name
	}
	return p.Namespace + "/" + p.Name
}

// plan is what a change set means for the repository, given the managed files on the base branch.
type plan struct {
	Proposals  branchSpec
	Promotions []branchSpec
}

// makePlan decides the content of every branch. It is pure: the base branch's managed files and a
// normalized change set in, branch contents out.
//
//	proposal      on base                 proposals branch            promotion branch
//	audit         -                       add audit/x                 -
//	audit         audit/x (other bytes)   update audit/x              -
//	audit         enforced/x              demote enforced/x->audit/x  -
//	enforced      audit/x only            keep audit/x as on base     promote audit/x->enforced/x
//	enforced      enforced/x              update enforced/x           -
//	enforced      -                       add enforced/x              -
//	(missing)     audit/x or enforced/x   remove                      -
func makePlan(gitPath string, base map[string][]byte, cs ChangeSet) plan {
	var pl plan
	desired := map[string][]byte{}
	var changes []Change
	for i := range cs {
		p := &cs[i]
		content := render(p)
		auditPath, enforcedPath := policyPath(gitPath, StateAudit, p.Namespace, p.Name), policyPath(gitPath, StateEnforced, p.Namespace, p.Name)
		_, inAudit := base[auditPath]
		_, inEnforced := base[enforcedPath]
		target, other := auditPath, enforcedPath
		if p.State == StateEnforced {
			target, other = enforcedPath, auditPath
		}
		if p.State == StateEnforced && inAudit && !inEnforced {
			desired[auditPath] = base[auditPath]
			files := maps.Clone(base)
			delete(files, auditPath)
			files[enforcedPath] = content
			ch := Change{Policy: p.Name, Op: OpPromote, From: auditPath, To: enforcedPath, Proposal: p}
			pl.Promotions = append(pl.Promotions, branchSpec{
				Branch:     scopedBranch(gitPath, PromotionBranch(p.Name)),
				Kind:       KindPromotion,
				Files:      files,
				Changes:    []Change{ch},
				Message:    commitMessage(KindPromotion, []Change{ch}),
				ReportPath: reportPath(gitPath, PromotionBranch(p.Name)),
			})
			continue
		}
		desired[target] = content
		old, inTarget := base[target]
		_, inOther := base[other]
		switch {
		case inOther:
			op := OpDemote
			if p.State == StateEnforced {
				op = OpPromote // base had both files; the enforced one wins and audit/ goes away
			}
			changes = append(changes, Change{Policy: p.Name, Op: op, From: other, To: target, Proposal: p})
		case !inTarget:
			changes = append(changes, Change{Policy: p.Name, Op: OpAdd, To: target, Proposal: p})
		case !bytes.Equal(old, content):
			changes = append(changes, Change{Policy: p.Name, Op: OpUpdate, From: target, To: target, Proposal: p})
		}
	}
	proposed := make(map[string]bool, len(cs))
	for i := range cs {
		proposed[cs[i].key()] = true
	}
	for _, f := range slices.Sorted(maps.Keys(base)) {
		if _, ok := desired[f]; ok {
			continue
		}
		if proposed[policyKeyOf(gitPath, f)] {
			continue // the other file of a demoted or promoted policy: reported with it
		}
		changes = append(changes, Change{Policy: policyOf(f), Op: OpRemove, From: f})
	}
	slices.SortStableFunc(changes, func(a, b Change) int { return strings.Compare(a.Policy, b.Policy) })
	pl.Proposals = branchSpec{
		Branch:     scopedBranch(gitPath, ProposalsBranch),
		Kind:       KindProposals,
		Files:      desired,
		Changes:    changes,
		Message:    commitMessage(KindProposals, changes),
		ReportPath: reportPath(gitPath, ProposalsBranch),
	}
	return pl
}

// reportPath is where a branch carries its review (the pull request body) as a file, so that
// --git-only branches and merged history keep the evidence: <git-path>/reports/<branch>.md, one
// file per branch so that merging two branches never conflicts on it.
func reportPath(gitPath, branch string) string {
	return path.Join(gitPath, "reports", strings.TrimPrefix(branch, branchPrefix)+".md")
}

// commitMessage says which policies a commit changes and at which revision.
func commitMessage(kind Kind, changes []Change) string {
	var b strings.Builder
	b.WriteString(title(kind, changes))
	b.WriteString("\n\n")
	for _, c := range changes {
		switch c.Op {
		case OpAdd:
			fmt.Fprintf(&b, "add %s", c.To)
		case OpUpdate:
			fmt.Fprintf(&b, "update %s", c.To)
		case OpRemove:
			fmt.Fprintf(&b, "remove %s", c.From)
		case OpPromote, OpDemote:
			fmt.Fprintf(&b, "%s %s -> %s", c.Op, c.From, c.To)
		}
		if c.Proposal != nil && c.Proposal.Revision != "" {
			fmt.Fprintf(&b, " (revision %s)", c.Proposal.Revision)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// title is the commit subject and the pull request title.
func title(kind Kind, changes []Change) string {
	if kind == KindPromotion && len(changes) == 1 {
		return fmt.Sprintf("Promote network policy %s to enforced", changes[0].Policy)
	}
	counts := map[Op]int{}
	for _, c := range changes {
		counts[c.Op]++
	}
	var parts []string
	for _, op := range []Op{OpAdd, OpUpdate, OpPromote, OpDemote, OpRemove} {
		if n := counts[op]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, pastTense[op]))
		}
	}
	if len(parts) == 0 {
		return "Network policy proposals"
	}
	return "Network policy proposals: " + strings.Join(parts, ", ")
}

var pastTense = map[Op]string{OpAdd: "added", OpUpdate: "updated", OpRemove: "removed", OpPromote: "promoted", OpDemote: "demoted"}
