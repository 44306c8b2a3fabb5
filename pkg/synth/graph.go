package synth

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	v2 "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"
)

// Bounds of a drawn graph, well within Mermaid's default limits (500 edges, 50,000 characters
// of diagram text), above which it draws an error instead of the diagram. A picture of
// hundreds of peers says nothing anyway, and the tables next to it stay complete.
const (
	// MaxPolicyGraphEdges is the number of peers (edges) one policy's graph draws; the rest
	// become one "+N more" node per direction. Changed edges are drawn first.
	MaxPolicyGraphEdges = 40
	// MaxClusterGraphEdges is the number of connections GRAPH.md draws; the rest are counted
	// in one "+N more" node.
	MaxClusterGraphEdges = 200
	// maxLabelPorts is the number of ports an edge label lists before "+N more".
	maxLabelPorts = 6
)

// GraphMark says whether a rule, edge or node of a graph is unchanged, added or removed.
// Graphs of a policy set (REPORT.md, GRAPH.md) mark nothing; pull requests mark the rules
// changed since the previous revision.
type GraphMark uint8

const (
	MarkKept    GraphMark = iota // unchanged, or nothing is marked
	MarkAdded                    // added by the change
	MarkRemoved                  // removed by the change, drawn dashed
	MarkChanged                  // an edge some of whose rules were added or removed
)

// NodeKind is what a node stands for; each kind has its own shape.
type NodeKind uint8

const (
	NodeSubject  NodeKind = iota // the endpoints a policy selects
	NodeWorkload                 // an endpoint selector
	NodeEntity                   // a reserved entity (entity:world)
	NodeCIDR                     // an address range (cidr:203.0.113.0/24)
	NodeFQDN                     // a DNS name or pattern (fqdn:api.example.com)
	NodeOther                    // nodes, services, CIDR groups, any peer
	NodeClosed                   // a direction closed with nothing allowed
	NodeMore                     // peers left out by the edge bound
)

// GraphNode is one node of a graph.
type GraphNode struct {
	// ID is the node's Mermaid id: letters and digits only, assigned in sorted order.
	ID    string
	Kind  NodeKind
	Lines []string // label, one entry per line
	// Namespace groups workload nodes in GRAPH.md; "" for peers outside any namespace.
	Namespace string
	Mark      GraphMark
}

// GraphRule is one atom of a policy drawn on an edge.
type GraphRule struct {
	Change
	Mark GraphMark
}

// GraphEdge is the traffic allowed (or denied, with Deny) from one node to another.
type GraphEdge struct {
	From, To string // node IDs
	Deny     bool
	Rules    []GraphRule // sorted by atom
	Mark     GraphMark
}

// Graph is a picture of what policies allow: who may talk to whom, on which ports. It is a
// model built from the policies' atoms (the same the semantic diff compares); Graph.Mermaid
// renders it.
type Graph struct {
	Nodes []GraphNode // by kind (subjects first), namespace and label
	Edges []GraphEdge // changed first (a policy's graph), then by their ends
	// Omitted is the number of edges the bound left out; "+N more" nodes say how many.
	Omitted int
}

// PolicyGraph draws one policy: its ingress peers pointing at the workload, the workload
// pointing at its egress peers, each edge labelled with its ports and L7 rules. added and
// removed (the rules changed since the previous revision, as Diff returns them) mark edges
// and nodes; removed rules are drawn too, so the picture shows what the change takes away.
// A removed atom the policy still holds is drawn as kept; a policy all of whose atoms are
// added (a new one) is drawn unmarked.
func PolicyGraph(p *v2.CiliumClusterwideNetworkPolicy, added, removed []Change) *Graph {
	b := newGraphBuilder()
	subject := b.node("subject", NodeSubject, "")
	subject.Lines = []string{cmp.Or(p.Annotations[AnnotationWorkload], p.Name)}
	atoms := Atoms(p)
	isAdded := map[Change]bool{}
	for _, c := range added {
		isAdded[c] = true
	}
	rules := make([]GraphRule, 0, len(atoms)+len(removed))
	held := map[Change]bool{}
	for _, a := range atoms {
		held[a] = true
		m := MarkKept
		if isAdded[a] {
			m = MarkAdded
		}
		rules = append(rules, GraphRule{Change: a, Mark: m})
	}
	for _, c := range removed {
		if !held[c] {
			held[c] = true
			rules = append(rules, GraphRule{Change: c, Mark: MarkRemoved})
		}
	}
	slices.SortFunc(rules, func(a, b GraphRule) int { return compareChange(a.Change, b.Change) })
	if !slices.ContainsFunc(rules, func(r GraphRule) bool { return r.Mark != MarkAdded }) {
		// A new policy: every rule is added, and painting all of it green says nothing.
		for i := range rules {
			rules[i].Mark = MarkKept
		}
	}
	// Peer selectors name their cluster (issue 16). When they all name the same one, the
	// subject says it once instead of every peer.
	clusters := map[string]bool{}
	for _, r := range rules {
		if c, ok := peerCluster(r.Peer); ok && r.Direction != "selects" {
			clusters[c] = true
		}
	}
	var cluster string
	if len(clusters) == 1 {
		for c := range clusters {
			cluster, b.trim = c, " (cluster "+c+")"
		}
	}
	for _, r := range rules {
		switch r.Direction {
		case "selects":
			line := r.Peer
			if r.Mark == MarkRemoved {
				line = "was " + line
			}
			subject.Lines = append(subject.Lines, line)
		case closedIngress, closedEgress:
			dir := strings.TrimSuffix(r.Direction, "-closed")
			n := b.node(r.Direction, NodeClosed, "")
			n.Lines = []string{"no " + dir + " allowed (default deny)"}
			if dir == "ingress" {
				b.edge(n, subject, true, r)
			} else {
				b.edge(subject, n, true, r)
			}
		default:
			peer := b.peer(r.Peer)
			if isIngress(r.Direction) {
				b.edge(peer, subject, isDeny(r.Direction), r)
			} else {
				b.edge(subject, peer, isDeny(r.Direction), r)
			}
		}
	}
	if cluster != "" {
		subject.Lines = append(subject.Lines, "peers in cluster "+cluster)
	}
	return b.finish(MaxPolicyGraphEdges, true)
}

// peerCluster returns the cluster a peer selector names (the " (cluster name)" selectorString
// appends).
func peerCluster(peer string) (string, bool) {
	i := strings.LastIndex(peer, " (cluster ")
	if i < 0 || !strings.HasSuffix(peer, ")") {
		return "", false
	}
	return peer[i+len(" (cluster ") : len(peer)-1], true
}

// ClusterGraph draws every proposal of a result as one graph: workloads as nodes grouped by
// namespace, an edge for each connection a policy allows (client to server), labelled with
// its ports. A connection both ends' policies allow is one edge. A peer selector is drawn as
// the proposed workload whose own selector it equals (the local cluster name ignored); any
// other peer (a canary's general selector, a workload without a policy, an entity, a name, an
// address) is a node of its own.
func ClusterGraph(res *Result) *Graph {
	b := newGraphBuilder()
	bySelector := map[string]*GraphNode{}
	type subject struct {
		node  *GraphNode
		atoms []Change
	}
	subjects := make([]subject, 0, len(res.Proposals))
	for _, p := range res.Proposals {
		n := b.node("subject\x00"+p.Name, NodeSubject, p.Workload.Namespace)
		n.Lines = []string{cmp.Or(p.Display, p.Name)}
		atoms := Atoms(p.Policy)
		for _, a := range atoms {
			if a.Direction == "selects" {
				bySelector[a.Peer] = n
			}
		}
		subjects = append(subjects, subject{node: n, atoms: atoms})
	}
	local := ""
	if res.Cluster != "" {
		local = " (cluster " + res.Cluster + ")"
		b.trim = local // RenderGraph names the cluster once
	}
	for _, s := range subjects {
		for _, a := range s.atoms {
			switch a.Direction {
			case "selects", closedIngress, closedEgress:
				continue
			}
			peer := bySelector[strings.TrimSuffix(a.Peer, local)]
			if peer == nil {
				peer = b.peer(a.Peer)
			}
			// Both ends' policies name the same connection: its rules carry no direction, so
			// the client's egress and the server's ingress merge.
			r := GraphRule{Change: Change{Port: a.Port, L7: a.L7}}
			if isIngress(a.Direction) {
				b.edge(peer, s.node, isDeny(a.Direction), r)
			} else {
				b.edge(s.node, peer, isDeny(a.Direction), r)
			}
		}
	}
	return b.finish(MaxClusterGraphEdges, false)
}

func isIngress(dir string) bool { return strings.HasPrefix(dir, "ingress") }
func isDeny(dir string) bool    { return strings.HasSuffix(dir, "-deny") }

// graphBuilder collects nodes and edges by key; finish sorts them and assigns ids.
type graphBuilder struct {
	nodes map[string]*GraphNode // key -> node; the key is kept in ID until finish
	edges map[string]*GraphEdge // from key, to key, deny -> edge
	trim  string                // suffix left out of peer labels (the one cluster all name)
}

func newGraphBuilder() *graphBuilder {
	return &graphBuilder{nodes: map[string]*GraphNode{}, edges: map[string]*GraphEdge{}}
}

func (b *graphBuilder) node(key string, kind NodeKind, ns string) *GraphNode {
	if n, ok := b.nodes[key]; ok {
		return n
	}
	n := &GraphNode{ID: key, Kind: kind, Namespace: ns}
	b.nodes[key] = n
	return n
}

// peer returns the node of a peer as Atoms names it ("shop/app=web", "entity:world", ...).
func (b *graphBuilder) peer(name string) *GraphNode {
	kind, ns := NodeOther, ""
	switch {
	case strings.HasPrefix(name, "entity:"):
		kind = NodeEntity
	case strings.HasPrefix(name, "cidr:"):
		kind = NodeCIDR
	case strings.HasPrefix(name, "fqdn:"), strings.HasPrefix(name, "fqdn-pattern:"):
		kind = NodeFQDN
	case strings.HasPrefix(name, "{"):
		kind = NodeWorkload // a selector naming no namespace: every namespace
	case strings.Contains(name, "/") && !strings.ContainsAny(strings.SplitN(name, "/", 2)[0], " :{"):
		kind, ns = NodeWorkload, strings.SplitN(name, "/", 2)[0]
	}
	n := b.node("peer\x00"+name, kind, ns)
	n.Lines = []string{strings.TrimSuffix(name, b.trim)}
	return n
}

func (b *graphBuilder) edge(from, to *GraphNode, deny bool, r GraphRule) {
	key := fmt.Sprintf("%s\x01%s\x01%t", from.ID, to.ID, deny)
	e, ok := b.edges[key]
	if !ok {
		e = &GraphEdge{From: from.ID, To: to.ID, Deny: deny}
		b.edges[key] = e
	}
	if !slices.Contains(e.Rules, r) {
		e.Rules = append(e.Rules, r)
	}
}

// finish marks, sorts and bounds the graph and gives every node its Mermaid id. perPolicy
// is a single policy's graph: changed edges sort first, so that the bound never hides what a
// pull request changes, and what it leaves out is counted per direction.
func (b *graphBuilder) finish(maxEdges int, perPolicy bool) *Graph {
	edges := slices.Collect(maps.Values(b.edges))
	for _, e := range edges {
		slices.SortFunc(e.Rules, func(a, c GraphRule) int {
			return cmp.Or(compareChange(a.Change, c.Change), cmp.Compare(a.Mark, c.Mark))
		})
		e.Mark = combine(ruleMarks(e.Rules))
	}
	// Until ids are assigned, a node's ID is its builder key: unique, so sorting is total.
	nodeKey := func(n *GraphNode) string {
		return fmt.Sprintf("%d\x00%s\x00%s\x00%s", n.Kind, n.Namespace, strings.Join(n.Lines, "\n"), n.ID)
	}
	edgeKey := func(e *GraphEdge) string {
		return nodeKey(b.nodes[e.From]) + "\x01" + nodeKey(b.nodes[e.To]) + "\x01" + strconv.FormatBool(e.Deny)
	}
	slices.SortFunc(edges, func(a, c *GraphEdge) int {
		if perPolicy {
			if d := cmp.Compare(keptLast(a.Mark), keptLast(c.Mark)); d != 0 {
				return d
			}
		}
		return cmp.Compare(edgeKey(a), edgeKey(c))
	})
	g := &Graph{}
	drawn := edges
	if len(edges) > maxEdges {
		drawn, g.Omitted = edges[:maxEdges], len(edges)-maxEdges
	}
	used := map[string]bool{}
	for _, e := range drawn {
		used[e.From], used[e.To] = true, true
	}
	var nodes []*GraphNode
	var subject *GraphNode // the policy's own node (perPolicy)
	for _, n := range b.nodes {
		if n.Kind == NodeSubject {
			subject = n
		}
		// A workload without any edge (closed both ways) is drawn unless the bound was hit.
		if used[n.ID] || n.Kind == NodeSubject && (perPolicy || g.Omitted == 0) {
			nodes = append(nodes, n)
		}
	}
	var more []*GraphEdge
	switch {
	case g.Omitted == 0:
	case perPolicy:
		var in, out int
		for _, e := range edges[maxEdges:] {
			if e.To == subject.ID {
				in++
			} else {
				out++
			}
		}
		for _, m := range []struct {
			dir string
			n   int
		}{{"ingress", in}, {"egress", out}} {
			if m.n == 0 {
				continue
			}
			n := &GraphNode{ID: "more\x00" + m.dir, Kind: NodeMore, Lines: []string{fmt.Sprintf("+%d more %s peers (see the tables)", m.n, m.dir)}}
			nodes = append(nodes, n)
			if m.dir == "ingress" {
				more = append(more, &GraphEdge{From: n.ID, To: subject.ID})
			} else {
				more = append(more, &GraphEdge{From: subject.ID, To: n.ID})
			}
		}
	default:
		nodes = append(nodes, &GraphNode{ID: "more", Kind: NodeMore,
			Lines: []string{fmt.Sprintf("+%d more connections (see REPORT.md)", g.Omitted)}})
	}
	slices.SortFunc(nodes, func(a, c *GraphNode) int { return cmp.Compare(nodeKey(a), nodeKey(c)) })
	ids := map[string]string{}
	for i, n := range nodes {
		ids[n.ID] = "n" + strconv.Itoa(i)
	}
	for _, e := range append(drawn, more...) {
		g.Edges = append(g.Edges, GraphEdge{From: ids[e.From], To: ids[e.To], Deny: e.Deny, Rules: e.Rules, Mark: e.Mark})
	}
	// A peer is added or removed when every edge it has is.
	marks := map[string][]GraphMark{}
	for _, e := range g.Edges {
		marks[e.From] = append(marks[e.From], e.Mark)
		marks[e.To] = append(marks[e.To], e.Mark)
	}
	for _, n := range nodes {
		n.ID = ids[n.ID]
		if m := combine(marks[n.ID]); n.Kind != NodeSubject && (m == MarkAdded || m == MarkRemoved) {
			n.Mark = m
		}
		g.Nodes = append(g.Nodes, *n)
	}
	return g
}

// keptLast orders changed edges before unchanged ones.
func keptLast(m GraphMark) int {
	if m == MarkKept {
		return 1
	}
	return 0
}

func ruleMarks(rules []GraphRule) []GraphMark {
	out := make([]GraphMark, len(rules))
	for i, r := range rules {
		out[i] = r.Mark
	}
	return out
}

// combine is the mark of an edge or node from those of its parts: added or removed when all
// of them are, changed when some are (or some are changed).
func combine(marks []GraphMark) GraphMark {
	var added, removed, other bool
	for _, m := range marks {
		switch m {
		case MarkAdded:
			added = true
		case MarkRemoved:
			removed = true
		case MarkChanged:
			added, removed = true, true
		default:
			other = true
		}
	}
	switch {
	case added && !removed && !other:
		return MarkAdded
	case removed && !added && !other:
		return MarkRemoved
	case added || removed:
		return MarkChanged
	}
	return MarkKept
}

// Marked reports whether anything in the graph is added or removed.
func (g *Graph) Marked() bool {
	return slices.ContainsFunc(g.Edges, func(e GraphEdge) bool { return e.Mark != MarkKept })
}

// Mermaid styles. Colours are GitHub's own (Primer) so the picture fits the page in light
// and dark mode; removed things are dashed as well as red, for readers who cannot tell the
// colours apart.
const (
	styleSubject = "fill:#ddf4ff,stroke:#0969da,stroke-width:2px,color:#1f2328"
	styleAdded   = "fill:#dafbe1,stroke:#1a7f37,stroke-width:2px,color:#1f2328"
	styleRemoved = "fill:#ffebe9,stroke:#cf222e,stroke-dasharray:5 3,color:#1f2328"
	styleMore    = "fill:#f6f8fa,stroke:#8c959f,stroke-dasharray:2 2,color:#1f2328"
	linkAdded    = "stroke:#1a7f37,stroke-width:3px"
	linkRemoved  = "stroke:#cf222e,stroke-width:2px,stroke-dasharray:5 3"
	linkChanged  = "stroke:#9a6700,stroke-width:2px"
)

// Mermaid renders the graph as a fenced ```mermaid block GitHub draws. Labels are quoted and
// every character outside a small safe set is written as a Mermaid entity (#35; for "#"), so
// no peer name, selector or rule can end a label, a line or the fence.
func (g *Graph) Mermaid() string {
	var b strings.Builder
	b.WriteString("```mermaid\nflowchart LR\n")
	classes := map[string][]string{}
	byNS := map[string][]GraphNode{}
	for _, n := range g.Nodes {
		byNS[n.Namespace] = append(byNS[n.Namespace], n)
		switch {
		case n.Kind == NodeSubject:
			classes["subject"] = append(classes["subject"], n.ID)
		case n.Kind == NodeMore:
			classes["more"] = append(classes["more"], n.ID)
		case n.Mark == MarkAdded:
			classes["added"] = append(classes["added"], n.ID)
		case n.Mark == MarkRemoved:
			classes["removed"] = append(classes["removed"], n.ID)
		}
	}
	grouped := len(byNS) > 1 || byNS[""] == nil
	for i, ns := range slices.Sorted(maps.Keys(byNS)) {
		indent := "  "
		if grouped && ns != "" {
			fmt.Fprintf(&b, "  subgraph ns%d[\"%s\"]\n", i, mermaidText(ns))
			indent = "    "
		}
		for _, n := range byNS[ns] {
			b.WriteString(indent + nodeShape(n) + "\n")
		}
		if grouped && ns != "" {
			b.WriteString("  end\n")
		}
	}
	links := map[GraphMark][]string{}
	for i, e := range g.Edges {
		arrow := "-->"
		switch {
		case e.Deny:
			arrow = "--x"
		case e.Mark == MarkRemoved:
			arrow = "-.->"
		case e.Mark == MarkAdded:
			arrow = "==>"
		case len(e.Rules) == 0:
			arrow = "-.->" // a "+N more" node
		}
		if label := edgeLabel(e); label != "" {
			fmt.Fprintf(&b, "  %s %s|\"%s\"| %s\n", e.From, arrow, label, e.To)
		} else {
			fmt.Fprintf(&b, "  %s %s %s\n", e.From, arrow, e.To)
		}
		if e.Mark != MarkKept {
			links[e.Mark] = append(links[e.Mark], strconv.Itoa(i))
		}
	}
	for _, c := range []struct{ name, style string }{{"subject", styleSubject}, {"added", styleAdded}, {"removed", styleRemoved}, {"more", styleMore}} {
		if ids := classes[c.name]; len(ids) > 0 {
			fmt.Fprintf(&b, "  classDef %s %s\n  class %s %s\n", c.name, c.style, strings.Join(ids, ","), c.name)
		}
	}
	for _, l := range []struct {
		mark  GraphMark
		style string
	}{{MarkAdded, linkAdded}, {MarkRemoved, linkRemoved}, {MarkChanged, linkChanged}} {
		if idx := links[l.mark]; len(idx) > 0 {
			fmt.Fprintf(&b, "  linkStyle %s %s\n", strings.Join(idx, ","), l.style)
		}
	}
	b.WriteString("```\n")
	return b.String()
}

// nodeShape is a node's definition: subject [[..]], workload [..], entity {{..}}, CIDR [/../],
// name ([..]), closed and other (..), more [..].
func nodeShape(n GraphNode) string {
	lines := make([]string, len(n.Lines))
	for i, l := range n.Lines {
		lines[i] = mermaidText(l)
	}
	label := `"` + strings.Join(lines, "<br/>") + `"`
	switch n.Kind {
	case NodeSubject:
		return n.ID + "[[" + label + "]]"
	case NodeEntity:
		return n.ID + "{{" + label + "}}"
	case NodeCIDR:
		return n.ID + "[/" + label + "/]"
	case NodeFQDN:
		return n.ID + "([" + label + "])"
	case NodeOther, NodeClosed:
		return n.ID + "(" + label + ")"
	}
	return n.ID + "[" + label + "]"
}

// edgeLabel lists an edge's ports, each with its L7 rules counted ("53/UDP (4 dns rules)",
// "8080/TCP (3 http rules)"). In a pull request a port added or removed as a whole is prefixed "+"
// or "−", and a port whose L7 rules changed says how many were added and removed
// ("53/UDP (3 dns rules, +1)").
func edgeLabel(e GraphEdge) string {
	type port struct {
		name           string
		l7             map[string]int // "dns", "http" -> rules
		marks          []GraphMark
		added, removed int
	}
	var ports []*port
	for _, r := range e.Rules {
		if r.Port == "" {
			continue // a closed direction
		}
		var p *port
		if len(ports) > 0 && ports[len(ports)-1].name == r.Port {
			p = ports[len(ports)-1]
		} else {
			p = &port{name: r.Port, l7: map[string]int{}}
			ports = append(ports, p)
		}
		p.marks = append(p.marks, r.Mark)
		if kind, _, ok := strings.Cut(r.L7, " "); ok {
			switch r.Mark {
			case MarkAdded:
				p.added++
			case MarkRemoved:
				p.removed++
			}
			if r.Mark != MarkRemoved || e.Mark == MarkRemoved {
				p.l7[kind]++ // the rules the port has now; a removed edge says what it had
			}
		}
	}
	// Numbers in numeric order: 53, 443, 8080; ICMP and named ports after them.
	slices.SortStableFunc(ports, func(a, c *port) int {
		return cmp.Or(cmp.Compare(leadingNumber(a.name), leadingNumber(c.name)), cmp.Compare(a.name, c.name))
	})
	var parts []string
	for i, p := range ports {
		if i == maxLabelPorts {
			parts = append(parts, fmt.Sprintf("+%d more ports", len(ports)-i))
			break
		}
		var l7 []string
		for _, kind := range slices.Sorted(maps.Keys(p.l7)) {
			l7 = append(l7, plural(p.l7[kind], kind+" rule"))
		}
		s := p.name
		switch m := combine(p.marks); {
		case m == MarkAdded && e.Mark != MarkAdded:
			s = "+" + s
		case m == MarkRemoved && e.Mark != MarkRemoved:
			s = "−" + s
		case m == MarkChanged:
			if p.added > 0 {
				l7 = append(l7, "+"+strconv.Itoa(p.added))
			}
			if p.removed > 0 {
				l7 = append(l7, "−"+strconv.Itoa(p.removed))
			}
		}
		if len(l7) > 0 {
			s += " (" + strings.Join(l7, ", ") + ")"
		}
		parts = append(parts, mermaidText(s))
	}
	if e.Deny && len(parts) > 0 {
		parts[0] = "deny " + parts[0]
	}
	return strings.Join(parts, ", ")
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.Itoa(n) + " " + what + "s"
}

// leadingNumber is the port number a port atom starts with; ports without one sort last.
func leadingNumber(port string) int {
	end := strings.IndexFunc(port, func(r rune) bool { return r < '0' || r > '9' })
	if end < 0 {
		end = len(port)
	}
	n, err := strconv.Atoi(port[:end])
	if err != nil {
		return 1 << 17
	}
	return n
}

// mermaidText escapes a label: letters, digits, spaces and a few punctuation marks stay,
// everything else (quotes, #, ;, |, <, >, backticks, non-ASCII) becomes #<code>;, which
// Mermaid decodes. Line breaks become spaces.
func mermaidText(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', strings.ContainsRune(" .,:/=!*()[]{}+-_@?~", r):
			b.WriteRune(r)
		case r == '\n' || r == '\r' || r == '\t':
			b.WriteByte(' ')
		default:
			fmt.Fprintf(&b, "#%d;", r)
		}
	}
	return b.String()
}
