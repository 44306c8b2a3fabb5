package aggregate

import (
	"net/netip"
	"slices"

	"github.com/recommender/recommender/pkg/flows"
)

// keyCache remembers the key strings of peers seen recently. Building them is most of the
// per-flow cost otherwise (joins and concatenations, two per end), while the set of distinct
// peers is small and repeats endlessly. Each map is cleared when it reaches maxCachedKeys,
// which only costs recomputation.
type keyCache struct {
	workloads map[labelsID]workloadKeys
	peers     map[plainPeer]string // entity, FQDN and CIDR peers
	cidrs     map[string]Peer      // world IP -> CIDR peer
}

const maxCachedKeys = 1 << 16

// plainPeer is a peer without labels, as a map key.
type plainPeer struct {
	kind PeerKind
	name string // Entity, FQDN or CIDR
}

// labelsID identifies a label set by its backing array: flows.Normalizer hands out the same
// slice for every flow of an identity. The entry keeps the labels and is used only when they
// are still equal, so a caller that reuses a slice for other labels gets correct keys.
type labelsID struct {
	ns    string
	first *string
	n     int
}

type workloadKeys struct {
	labels  flows.Labels
	wkey    string // WorkloadKey.String()
	peerKey string // Peer.Key() of the workload as a peer
}

func newKeyCache() keyCache {
	return keyCache{
		workloads: make(map[labelsID]workloadKeys),
		peers:     make(map[plainPeer]string),
		cidrs:     make(map[string]Peer),
	}
}

func (c *keyCache) workload(p *flows.Peer) workloadKeys {
	id := labelsID{ns: p.Namespace, n: len(p.Labels)}
	if len(p.Labels) > 0 {
		id.first = &p.Labels[0]
	}
	if k, ok := c.workloads[id]; ok && slices.Equal(k.labels, p.Labels) {
		return k
	}
	wkey := p.Namespace + "/" + p.Labels.String()
	k := workloadKeys{labels: slices.Clone(p.Labels), wkey: wkey, peerKey: "workload:" + wkey}
	if len(c.workloads) >= maxCachedKeys {
		clear(c.workloads)
	}
	c.workloads[id] = k
	return k
}

// peer returns p with its key; p is an entity, FQDN or CIDR peer.
func (c *keyCache) peer(p Peer) (Peer, string, bool) {
	id := plainPeer{p.Kind, p.Entity + p.FQDN + p.CIDR} // one of them is set
	if k, ok := c.peers[id]; ok {
		return p, k, true
	}
	k := p.Key()
	if len(c.peers) >= maxCachedKeys {
		clear(c.peers)
	}
	c.peers[id] = k
	return p, k, true
}

// cidr returns the /32 or /128 peer of an IP, or the entity world for an address that does
// not parse.
func (c *keyCache) cidr(ip string) (Peer, string, bool) {
	p, ok := c.cidrs[ip]
	if !ok {
		p = Peer{Kind: PeerEntity, Entity: "world"}
		if addr, err := netip.ParseAddr(ip); err == nil {
			addr = addr.Unmap()
			p = Peer{Kind: PeerCIDR, CIDR: netip.PrefixFrom(addr, addr.BitLen()).String()}
		}
		if len(c.cidrs) >= maxCachedKeys {
			clear(c.cidrs)
		}
		c.cidrs[ip] = p
	}
	return c.peer(p)
}
