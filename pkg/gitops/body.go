package gitops

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	v2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"
	"sigs.k8s.io/yaml"

	"github.com/recommender/recommender/pkg/synth"
)

// Limits that keep a pull request body readable and under GitHub's 65,536-character maximum.
const (
	maxListedRules     = 50
	maxListedEvidence  = 50
	maxListedDenied    = 20
	maxSamplePeers     = 5
	maxBodyRunes       = 60000
	truncatedBodyNotes = "\n\n_The description was cut to fit GitHub's size limit; the policy files in this branch are complete._\n"
)

// prBody renders the pull request description: the review of a change set, policy by policy,
// each with a graph of what it allows. The output depends only on the changes (sorted by
// policy), never on map order or the clock. When the graphs would push the text past GitHub's
// limit, the body is written without them: every policy's rules and evidence matter more.
func prBody(kind Kind, changes []Change) string {
	graphs := map[string]*drawing{}
	for _, c := range changes {
		if d := draw(c.Proposal); d != nil {
			graphs[c.Policy] = d
		}
	}
	body := renderBody(kind, changes, graphs, "")
	if len(graphs) > 0 && utf8.RuneCountInString(body) > maxBodyRunes {
		body = renderBody(kind, changes, nil, "_The graphs of the policies are left out: with them the description would exceed GitHub's size limit. "+
			"REPORT.md, written with --out, draws them._\n\n")
	}
	return truncateBody(body)
}

func renderBody(kind Kind, changes []Change, graphs map[string]*drawing, note string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "<!-- recommender:%s -->\n", kind)
	fmt.Fprintf(&b, "%s%s -->\n", fingerprintMarker, changesFingerprint(changes))
	switch kind {
	case KindPromotion:
		b.WriteString("Promotes a network policy proposed by **recommender** from audit to enforcement. ")
		b.WriteString("It was shadow-evaluated against live traffic for its whole audit window; the evidence follows.\n\n")
	default:
		b.WriteString("Network policies proposed by **recommender** from observed Hubble flows. ")
		b.WriteString("Policies in `audit/` are shadow-evaluated against live traffic and are promoted to `enforced/` ")
		b.WriteString("by a separate pull request once their audit window is clean.\n\n")
	}
	b.WriteString(note)
	if len(graphs) > 0 {
		fmt.Fprintf(&b, "Each policy's graph shows what it allows: ingress peers point at the workload, it points at its egress peers; %s. "+
			"In changed policies, thick green edges and green peers are added, dashed red ones removed, "+
			"and `+` or `−` before a port marks a port added to or removed from a peer that stays.\n\n", synth.GraphLegend)
	}
	b.WriteString("| Policy | Change | Revision | Audit window |\n|---|---|---|---|\n")
	for _, c := range changes {
		rev, window := "", ""
		if c.Proposal != nil {
			rev, window = code(c.Proposal.Revision), windowShort(c.Proposal.Window)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", code(c.Policy), cell(changeText(c)), rev, window)
	}
	for _, c := range changes {
		writeSection(&b, c, graphs[c.Policy])
	}
	b.WriteString("\n---\n<sub>Maintained by recommender: it force-pushes this branch and rewrites this description when the proposal changes. ")
	b.WriteString("Review the policy files; edits to them are replaced by the next update.</sub>\n")
	return b.String()
}

// fingerprintMarker starts the body line naming what the body describes: the policies, their
// changes and revisions, without evidence. An open pull request is edited only when it changes,
// so new flows behind the same policies (a restart, a growing count) never touch it.
const fingerprintMarker = "<!-- recommender:fingerprint "

func changesFingerprint(changes []Change) string {
	h := sha256.New()
	for _, c := range changes {
		rev := ""
		if c.Proposal != nil {
			rev = string(c.Proposal.State) + "\x00" + c.Proposal.Revision
		}
		fmt.Fprintf(h, "%s\x00%s\x00%s\x00%s\x00%s\n", c.Policy, c.Op, c.From, c.To, rev)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// bodyFingerprint returns the fingerprint a body carries ("" when none).
func bodyFingerprint(body string) string {
	_, rest, ok := strings.Cut(body, fingerprintMarker)
	if !ok {
		return ""
	}
	fp, _, _ := strings.Cut(rest, " -->")
	return fp
}

func changeText(c Change) string {
	switch c.Op {
	case OpAdd:
		return "add " + code(c.To)
	case OpUpdate:
		return "update " + code(c.To)
	case OpRemove:
		return "remove " + code(c.From)
	default:
		return fmt.Sprintf("%s %s → %s", c.Op, code(c.From), code(c.To))
	}
}

func writeSection(b *strings.Builder, c Change, d *drawing) {
	fmt.Fprintf(b, "\n## %s\n\n", code(c.Policy))
	p := c.Proposal
	if p == nil {
		fmt.Fprintf(b, "**Change:** %s. The policy is no longer among the recommender's proposals, so its file is deleted.\n", changeText(c))
		return
	}
	fmt.Fprintf(b, "**Change:** %s", changeText(c))
	if p.Revision != "" {
		fmt.Fprintf(b, " (revision %s)", code(p.Revision))
	}
	b.WriteString(".\n")
	writeRules(b, "Rules added", p.Added)
	writeRules(b, "Rules removed", p.Removed)
	if len(p.Added) == 0 && len(p.Removed) == 0 && c.Op == OpUpdate {
		b.WriteString("\nNo rule changed; the policy text did (labels, names or formatting).\n")
	}

	if d != nil {
		b.WriteString("\n**Allowed peers and ports**\n\n")
		b.WriteString(d.graph.Mermaid())
		if d.undrawn > 0 {
			verb := "rules are"
			if d.undrawn == 1 {
				verb = "rule is"
			}
			fmt.Fprintf(b, "\n_%d changed %s not drawn (not in the form the recommender writes): see the lists above._\n", d.undrawn, verb)
		}
	}
	if len(p.Closed) > 0 {
		fmt.Fprintf(b, "\n**Closed for lack of traffic:** %s: no flow was observed, so nothing is allowed (default deny). "+
			"A workload that starts talking there shows up as would-be-denied flows in audit.\n", strings.Join(p.Closed, " and "))
	}
	b.WriteString("\n**Flows behind each rule**\n\n")
	if len(p.Evidence) == 0 {
		b.WriteString("No flow evidence recorded.\n")
	} else {
		b.WriteString("| Rule | Flows | First seen | Last seen | Sample peers |\n|---|---:|---|---|---|\n")
		for i, e := range p.Evidence {
			if i == maxListedEvidence {
				fmt.Fprintf(b, "| _%d more rules_ | | | | |\n", len(p.Evidence)-i)
				break
			}
			fmt.Fprintf(b, "| %s | %d | %s | %s | %s |\n", code(e.Rule), e.Flows, stamp(e.FirstSeen), stamp(e.LastSeen), peers(e.SamplePeers))
		}
	}

	b.WriteString("\n**Would-be-denied flows during audit**\n\n")
	if len(p.WouldDeny) == 0 {
		b.WriteString("None seen.\n")
	} else {
		b.WriteString("| Peer | Direction | Port | Flows | Now |\n|---|---|---|---:|---|\n")
		for i, d := range p.WouldDeny {
			if i == maxListedDenied {
				fmt.Fprintf(b, "| _%d more peers_ | | | | |\n", len(p.WouldDeny)-i)
				break
			}
			now := "denied by this revision: the window restarted"
			if d.Learned {
				now = "learned: allowed by this revision"
			}
			fmt.Fprintf(b, "| %s | %s | %s | %d | %s |\n", code(d.Peer), cell(d.Direction), port(d), d.Count, now)
		}
	}

	if len(p.Dropped) > 0 {
		b.WriteString("\n**Dropped by Cilium while in force**\n\n| Peer | Direction | Port | Flows | Blamed on |\n|---|---|---|---:|---|\n")
		for i, d := range p.Dropped {
			if i == maxListedDenied {
				fmt.Fprintf(b, "| _%d more peers_ | | | | |\n", len(p.Dropped)-i)
				break
			}
			blamed := "this policy (" + d.Attribution + ")"
			if !d.Ours {
				blamed = code(d.Policy) + ", not this policy (" + d.Attribution + ")"
			}
			fmt.Fprintf(b, "| %s | %s | %s | %d | %s |\n", code(d.Peer), cell(d.Direction),
				port(DeniedFlow{Protocol: d.Protocol, Port: d.Port}), d.Count, cell(blamed))
		}
	}

	fmt.Fprintf(b, "\n**Audit window:** %s\n", windowLong(p.Window))
}

// drawing is the graph of one proposal and the number of changed rules it could not place.
type drawing struct {
	graph   *synth.Graph
	undrawn int
}

// draw builds the graph of a proposal from its YAML, marking the rules Added and Removed name;
// nil when there is nothing to draw (no proposal, a policy allowing nothing, YAML that is no
// Cilium policy). Added and Removed are the strings synth.Change.String
// wrote; one that does not read back is left out of the picture and counted.
func draw(p *Proposal) *drawing {
	if p == nil {
		return nil
	}
	// The rules are what is drawn, and a CiliumNetworkPolicy holds them in the same fields.
	var pol v2.CiliumClusterwideNetworkPolicy
	if err := yaml.Unmarshal(p.YAML, &pol); err != nil || pol.Kind != v2.CCNPKindDefinition && pol.Kind != v2.CNPKindDefinition {
		return nil
	}
	d := &drawing{}
	parse := func(rules []string) []synth.Change {
		var out []synth.Change
		for _, r := range rules {
			c, err := synth.ParseChange(r)
			if err != nil {
				d.undrawn++
				continue
			}
			out = append(out, c)
		}
		return out
	}
	d.graph = synth.PolicyGraph(&pol, parse(p.Added), parse(p.Removed))
	if len(d.graph.Edges) == 0 {
		return nil
	}
	return d
}

func writeRules(b *strings.Builder, heading string, rules []string) {
	if len(rules) == 0 {
		return
	}
	fmt.Fprintf(b, "\n**%s** (%d)\n\n", heading, len(rules))
	for i, r := range rules {
		if i == maxListedRules {
			fmt.Fprintf(b, "- _and %d more_\n", len(rules)-i)
			break
		}
		fmt.Fprintf(b, "- %s\n", code(r))
	}
}

func windowShort(w Window) string {
	switch {
	case w.Required == 0:
		return "-"
	case w.Ready():
		return fmt.Sprintf("clean %s of %s ✅", duration(w.Clean), duration(w.Required))
	default:
		return fmt.Sprintf("clean %s of %s", duration(w.Clean), duration(w.Required))
	}
}

func windowLong(w Window) string {
	if w.Required == 0 && w.Start.IsZero() {
		return "not audited yet."
	}
	s := fmt.Sprintf("started %s; clean for %s of %s required; %d flows evaluated", stamp(w.Start), duration(w.Clean), duration(w.Required), w.FlowsSeen)
	switch {
	case w.Ready():
		return s + ". Ready for promotion."
	case w.FlowsSeen == 0:
		return s + ". Not ready: no traffic was evaluated, so the window proves nothing yet."
	default:
		return s + fmt.Sprintf(". Not ready: %s to go.", duration(w.Required-w.Clean))
	}
}

func port(d DeniedFlow) string {
	if d.Port == 0 {
		return cell(d.Protocol)
	}
	if d.Protocol == "" {
		return strconv.Itoa(int(d.Port))
	}
	return d.Protocol + "/" + strconv.Itoa(int(d.Port))
}

func peers(ps []string) string {
	var out []string
	for i, p := range ps {
		if i == maxSamplePeers {
			out = append(out, fmt.Sprintf("_+%d_", len(ps)-i))
			break
		}
		out = append(out, code(p))
	}
	return strings.Join(out, ", ")
}

// stamp prints a time in UTC to the minute: reviewers compare times across time zones.
func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04 UTC")
}

// duration prints days, hours and minutes, dropping zero units: 7d, 2d3h, 45m.
func duration(d time.Duration) string {
	if d < time.Minute {
		return "0m"
	}
	days, rem := d/(24*time.Hour), d%(24*time.Hour)
	hours, mins := rem/time.Hour, (rem%time.Hour)/time.Minute
	var s string
	if days > 0 {
		s += fmt.Sprintf("%dd", days)
	}
	if hours > 0 {
		s += fmt.Sprintf("%dh", hours)
	}
	if mins > 0 && days == 0 {
		s += fmt.Sprintf("%dm", mins)
	}
	return s
}

// code renders s as inline code inside a table cell: backticks in s get a longer fence, pipes are
// escaped (GitHub splits cells on them even inside code), newlines become spaces.
func code(s string) string {
	if s == "" {
		return ""
	}
	s = cell(s)
	fence := "`"
	for strings.Contains(s, fence) {
		fence += "`"
	}
	if strings.HasPrefix(s, "`") || strings.HasSuffix(s, "`") {
		return fence + " " + s + " " + fence
	}
	return fence + s + fence
}

func cell(s string) string {
	s = strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(s)
	return strings.ReplaceAll(s, "|", `\|`)
}

// truncateBody cuts an oversized body at a line end. A cut inside a fenced block (a graph)
// moves back to before the fence, so that the note is not swallowed by an unclosed block and
// no half graph is drawn.
func truncateBody(s string) string {
	if utf8.RuneCountInString(s) <= maxBodyRunes {
		return s
	}
	r := []rune(s)[:maxBodyRunes]
	cut := string(r)
	if i := strings.LastIndexByte(cut, '\n'); i > 0 {
		cut = cut[:i+1]
	}
	open := -1 // offset of the line opening the fence the cut is inside
	for off := 0; off < len(cut); {
		end := strings.IndexByte(cut[off:], '\n')
		if end < 0 {
			break
		}
		if strings.HasPrefix(cut[off:off+end], "```") {
			if open < 0 {
				open = off
			} else {
				open = -1
			}
		}
		off += end + 1
	}
	if open >= 0 {
		cut = cut[:open]
	}
	return strings.TrimRight(cut, "\n") + truncatedBodyNotes
}
