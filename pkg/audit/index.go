package audit

import (
	"net/netip"
	"sync"

	"github.com/cilium/cilium/pkg/labels"
	"github.com/cilium/cilium/pkg/policy/types"

	"github.com/recommender/recommender/pkg/flows"
)

// maxCached bounds the per-endpoint caches; a full cache is cleared, which only costs time.
const maxCached = 1 << 16

// peerInfo is one end of a flow as Cilium's selectors see it.
type peerInfo struct {
	workload bool
	// remote marks a workload of another cluster of the mesh: a peer, never a subject here.
	remote    bool
	world     bool
	localHost bool
	key       string
	labels    labels.LabelArray
}

// selection is what selects one endpoint in one direction: the matching rules and whether any
// of them turns default deny on.
type selection struct {
	entries     []*entry
	defaultDeny bool
}

// endpointPolicy is the cached answer for one workload.
type endpointPolicy struct {
	ingress, egress selection
}

// subjectGroup collects the rules sharing one subject selector, so each distinct selector is
// matched once per endpoint.
type subjectGroup struct {
	sel     *types.LabelSelector
	entries []*entry
}

// index finds the rules selecting an endpoint without scanning the whole set per flow. Subjects
// are grouped by selector and bucketed by the namespaces they are limited to (every CNP, and
// CCNPs whose selector names a namespace); a workload is matched once against the global
// subjects and its namespace's bucket, and the result is cached by its identity key (namespace
// plus stable labels), which repeats on nearly every flow.
type index struct {
	set *PolicySet

	buildOnce sync.Once
	global    []*subjectGroup
	byNS      map[string][]*subjectGroup

	// mu guards endpoints and peers.
	mu        sync.RWMutex
	endpoints map[string]*endpointPolicy
	peers     map[string]*peerInfo
}

func newIndex(s *PolicySet) *index {
	return &index{set: s, endpoints: make(map[string]*endpointPolicy), peers: make(map[string]*peerInfo)}
}

func (x *index) build() {
	groups := make(map[string]*subjectGroup)
	var order []*subjectGroup
	for _, e := range x.set.entries {
		k := e.subject.Key()
		g, ok := groups[k]
		if !ok {
			g = &subjectGroup{sel: e.subject}
			groups[k] = g
			order = append(order, g)
		}
		g.entries = append(g.entries, e)
	}
	x.byNS = make(map[string][]*subjectGroup)
	for _, g := range order {
		nss := g.sel.SelectedNamespaces()
		if len(nss) == 0 {
			x.global = append(x.global, g)
			continue
		}
		for _, ns := range nss {
			x.byNS[ns] = append(x.byNS[ns], g)
		}
	}
}

// selected returns the rules selecting the workload p in direction d, in policy order.
func (x *index) selected(p *peerInfo, d flows.Direction) *selection {
	x.mu.RLock()
	ep, ok := x.endpoints[p.key]
	x.mu.RUnlock()
	if !ok {
		ep = x.compute(p)
		x.mu.Lock()
		if len(x.endpoints) >= maxCached {
			clear(x.endpoints)
		}
		x.endpoints[p.key] = ep
		x.mu.Unlock()
	}
	if d == flows.DirectionIngress {
		return &ep.ingress
	}
	return &ep.egress
}

func (x *index) compute(p *peerInfo) *endpointPolicy {
	x.buildOnce.Do(x.build)
	ns, _ := p.labels.Lookup("k8s:" + flows.LabelNamespace)
	var matched []*subjectGroup
	for _, g := range x.global {
		if g.sel.Matches(p.labels) {
			matched = append(matched, g)
		}
	}
	for _, g := range x.byNS[ns] {
		if g.sel.Matches(p.labels) {
			matched = append(matched, g)
		}
	}
	ep := &endpointPolicy{}
	for _, g := range matched {
		for _, e := range g.entries {
			s := &ep.egress
			if e.ingress {
				s = &ep.ingress
			}
			s.entries = append(s.entries, e)
			s.defaultDeny = s.defaultDeny || e.defaultDeny
		}
	}
	return ep
}

// peer returns the selector view of a flow end. Workloads and entities are cached by key;
// world peers are built per flow (their IPs are many and each is cheap to label).
func (x *index) peer(p *flows.Peer) *peerInfo {
	if p.Kind == flows.PeerWorld || p.Kind == flows.PeerUnknown {
		return worldPeer(p)
	}
	key := p.Key()
	x.mu.RLock()
	pi, ok := x.peers[key]
	x.mu.RUnlock()
	if ok {
		return pi
	}
	pi = &peerInfo{key: key}
	if p.Kind == flows.PeerWorkload {
		pi.workload = true
		pi.labels = workloadLabels(p, x.set.cfg.ClusterName)
		c := p.Labels.Cluster()
		pi.remote = c != "" && x.set.cfg.ClusterName != "" && c != x.set.cfg.ClusterName
	} else {
		pi.localHost = p.Entity == labels.IDNameHost
		pi.labels = labels.LabelArray{labels.NewLabel(p.Entity, "", labels.LabelSourceReserved)}
	}
	x.mu.Lock()
	if len(x.peers) >= maxCached {
		clear(x.peers)
	}
	x.peers[key] = pi
	x.mu.Unlock()
	return pi
}

// worldPeer labels an address outside the cluster as Cilium labels a CIDR identity: the world
// entity (both the plain and the address-family form, so either selector spelling matches) and
// the host prefix, which CIDR selectors match by containment.
func worldPeer(p *flows.Peer) *peerInfo {
	pi := &peerInfo{world: true, key: "world:" + p.IP}
	pi.labels = labels.LabelArray{labels.NewLabel(labels.IDNameWorld, "", labels.LabelSourceReserved)}
	if addr, err := netip.ParseAddr(p.IP); err == nil {
		addr = addr.Unmap()
		family := labels.IDNameWorldIPv4
		if addr.Is6() {
			family = labels.IDNameWorldIPv6
		}
		pi.labels = append(pi.labels, labels.NewLabel(family, "", labels.LabelSourceReserved))
		if lbl, err := labels.IPStringToLabel(netip.PrefixFrom(addr, addr.BitLen()).String()); err == nil {
			pi.labels = append(pi.labels, lbl)
		}
	}
	return pi
}
