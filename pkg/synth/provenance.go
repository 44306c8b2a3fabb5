package synth

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/cilium/cilium/pkg/policy/api"
)

// Provenance labels and annotations on every generated policy. Other stages (cluster,
// gitops, audit) use them to find and compare what recommender owns.
//
// Only facts that change with the rules are written into the object. Evidence that grows
// with every flow (flow counts, the last observation) lives in REPORT.md and the pull-request
// body instead: an annotation that moved on every sync would make every sync a write, and
// every write of a policy wakes the policy watch of every Cilium agent in the cluster.
const (
	// LabelManagedBy marks a policy as generated and owned by recommender.
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// ManagedByValue is the value of LabelManagedBy.
	ManagedByValue = "recommender"

	annotationPrefix = "recommender.io/"
	// AnnotationWorkload names the workload the policy was generated for ("default/Deployment/web").
	AnnotationWorkload = annotationPrefix + "workload"
	// AnnotationRevision is "sha256:<hex>" of the canonical JSON of the spec: equal
	// revisions mean equal rules, whatever the annotations say.
	AnnotationRevision = annotationPrefix + "revision"
	// AnnotationReview is the number of findings flagged for review.
	AnnotationReview = annotationPrefix + "review-findings"
	// RevisionPrefix starts the value of AnnotationRevision; the rest is the Revision.
	RevisionPrefix = "sha256:"
)

// Revision returns the sha256 (hex) of the canonical JSON of a rule. encoding/json writes
// struct fields in declaration order and map keys sorted, so equal rules hash equally.
func Revision(r *api.Rule) (string, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return "", fmt.Errorf("encode rule: %w", err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// maxLogValue is Cilium's limit on spec.log.value: "limited to 32 printable characters"
// (pkg/policy/api LogConfig; the CRD says maxLength 32, pattern ^\PC*$).
const maxLogValue = 32

// LogValue is the spec.log.value Config.PolicyLog writes on the policy named name: the name
// itself when it fits Cilium's 32 characters, else its first characters, '-' and a short hash
// of the whole name, so distinct names keep distinct values. It is a function of the name
// alone: a reader of Hubble's policy_log maps a value back to one of our policies by
// computing LogValue of the names it owns.
func LogValue(name string) string {
	if len(name) <= maxLogValue {
		return name
	}
	h := shortHash(name)
	return strings.TrimRight(name[:maxLogValue-len(h)-1], "-") + "-" + h
}

// finish names, labels, annotates and validates a built proposal.
func finish(p *Proposal, clusterName string, kind PolicyKind) error {
	rev, err := Revision(p.Policy.Spec)
	if err != nil {
		return err
	}
	p.Revision = rev
	p.Policy.Name = p.Name
	p.Policy.Labels = map[string]string{LabelManagedBy: ManagedByValue}
	p.Policy.Annotations = map[string]string{
		AnnotationWorkload: p.Display,
		AnnotationRevision: RevisionPrefix + rev,
		AnnotationReview:   strconv.Itoa(len(p.Review)),
	}
	if err := Validate(p.Policy, clusterName); err != nil {
		return err
	}
	if kind.Namespaced() {
		return validateCNP(p.Policy, clusterName)
	}
	return nil
}
