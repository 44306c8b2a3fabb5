package flows

import (
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Rendezvous assigns each node to one replica of a set by rendezvous (highest random weight)
// hashing: the replica whose hash with the node's name is highest reads it. Every replica
// computes the same answer from the same member list with no coordination, and when a member
// joins or leaves only the nodes it gains or held move (about 1/n of them), never the rest.
// It implements Assignment; SetMembers may be called while a NodesSource uses it (call the
// source's Reassign after). Safe for concurrent use.
type Rendezvous struct {
	self string
	// mu guards members.
	mu      sync.RWMutex
	members []string
}

// NewRendezvous returns the assignment of replica self among members (self must be one).
func NewRendezvous(self string, members []string) (*Rendezvous, error) {
	if !slices.Contains(members, self) {
		return nil, fmt.Errorf("replica %q is not in the replica set %v", self, members)
	}
	r := &Rendezvous{self: self}
	if err := r.SetMembers(members); err != nil {
		return nil, err
	}
	return r, nil
}

// StaticReplicas names the members of a fixed set of n replicas by index ("0" .. "n-1"),
// the StatefulSet ordinals.
func StaticReplicas(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = strconv.Itoa(i)
	}
	return out
}

// SetMembers replaces the replica set. A set without this replica makes it read no node: a
// replica that lost its membership Lease (replicas.Membership) must stop reading while the
// others may take its nodes.
func (r *Rendezvous) SetMembers(members []string) error {
	ms := slices.Clone(members)
	slices.Sort(ms)
	ms = slices.Compact(ms)
	r.mu.Lock()
	r.members = ms
	r.mu.Unlock()
	return nil
}

// Members returns the current replica set, sorted.
func (r *Rendezvous) Members() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return slices.Clone(r.members)
}

// Owner returns the replica that reads node.
func (r *Rendezvous) Owner(node string) string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return rendezvousOwner(r.members, node)
}

// Owns reports whether this replica reads node.
func (r *Rendezvous) Owns(node string) bool { return r.Owner(node) == r.self }

func rendezvousOwner(members []string, node string) string {
	var best string
	var top uint64
	for _, m := range members {
		if w := weight(m, node); best == "" || w > top || (w == top && m < best) {
			best, top = m, w
		}
	}
	return best
}

// weight is the rendezvous weight of (member, node): FNV-1a over both names, finished with
// the splitmix64 mixer so that names differing in one character still spread evenly.
func weight(member, node string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(member))
	h.Write([]byte{0})
	h.Write([]byte(node))
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// ErrNoOrdinal is returned by Ordinal for a name that does not end in "-<number>".
var ErrNoOrdinal = errors.New("pod name has no StatefulSet ordinal")

// Ordinal returns the StatefulSet ordinal a pod name ends with ("recommender-2" -> 2), the
// default replica index.
func Ordinal(pod string) (int, error) {
	i := strings.LastIndexByte(pod, '-')
	if i < 0 {
		return 0, fmt.Errorf("%q: %w", pod, ErrNoOrdinal)
	}
	n, err := strconv.Atoi(pod[i+1:])
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q: %w", pod, ErrNoOrdinal)
	}
	return n, nil
}
