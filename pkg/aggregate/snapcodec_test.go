package aggregate

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/recommender/recommender/internal/realdata"
	"github.com/recommender/recommender/pkg/flows"
)

// codecSnapshots are snapshots of every shape an Aggregator builds: the bundled recordings
// (DNS, HTTP, entities, CIDRs, lost events), ../shared/realdata's captures when present, a
// random mix with churning labels folded and ports collapsed into ranges, and the empty one.
func codecSnapshots(t *testing.T) map[string]*Snapshot {
	t.Helper()
	paths, err := filepath.Glob("../../testdata/flows/*.jsonl")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no recordings: %v", err)
	}
	out := map[string]*Snapshot{
		"empty":      newAgg(t, Config{}).Snapshot(),
		"recordings": aggregateOf(t, Config{}, readAll(t, paths...)),
	}
	if dir := realdata.Dir("flows"); dir != "" {
		real, err := filepath.Glob(filepath.Join(dir, "*.jsonl"))
		if err != nil {
			t.Fatal(err)
		}
		// Lenient: the exporter's field-masked lines are not all flows this reader keeps.
		src, err := flows.NewFileSource(flows.FileConfig{Paths: real}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		a := newAgg(t, Config{})
		drain(t, src, a)
		out["realdata"] = a.Snapshot()
	}
	r := rand.New(rand.NewPCG(19, 3))
	var evs []*flows.Event
	for i := range 3000 {
		evs = append(evs, churnyFlow(r, i))
	}
	out["random"] = aggregateOf(t, Config{MaxPorts: 4, MaxDNSNames: 2, MaxHTTPSamples: 2}, evs)
	return out
}

// Ensure a snapshot comes back from its binary form exactly as it was, DNS ages included, and
// that the form is deterministic.
func TestSnapshotBinaryRoundTrip(t *testing.T) {
	for name, want := range codecSnapshots(t) {
		t.Run(name, func(t *testing.T) {
			b, err := want.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			var got Snapshot
			if err := got.UnmarshalBinary(b); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(normalized(&got), normalized(want)) {
				sameSnapshot(t, &got, want)
				t.Fatalf("DNS ages differ: got %v, want %v", got.dnsLast, want.dnsLast)
			}
			again, err := got.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(again, b) {
				t.Error("encoding the decoded snapshot gives other bytes")
			}
			if name != "empty" && want.EdgeCount() == 0 {
				t.Fatal("the fixture holds no edge")
			}
		})
	}
}

// normalized treats empty and nil maps alike, as the encoding does.
func normalized(s *Snapshot) *Snapshot {
	c := *s
	if len(c.DNS) == 0 {
		c.DNS = nil
	}
	if len(c.dnsLast) == 0 {
		c.dnsLast = nil
	}
	if len(c.Edges) == 0 {
		c.Edges = nil
	}
	return &c
}

// Ensure every cut of a snapshot's binary form, and every damage that makes it name what no
// Aggregator keeps, fails with ErrSnapshot (never a panic, never a snapshot), saying where.
func TestSnapshotBinaryRejects(t *testing.T) {
	snap := aggregateOf(t, Config{}, []*flows.Event{
		flow(1, workload("shop", "k8s:app=web"), workload("shop", "k8s:app=db", "k8s:tier=data"), flows.ProtoTCP, 5432),
	})
	good, err := snap.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	for n := range len(good) {
		var s Snapshot
		if err := s.UnmarshalBinary(good[:n]); !errors.Is(err, ErrSnapshot) {
			t.Fatalf("cut at byte %d of %d: err = %v, want ErrSnapshot", n, len(good), err)
		}
	}
	// replace returns good with the first old replaced by new; old must occur in it.
	replace := func(old, new string) []byte {
		if !bytes.Contains(good, []byte(old)) {
			t.Fatalf("%q not in the encoding", old)
		}
		return bytes.Replace(good, []byte(old), []byte(new), 1)
	}
	for _, c := range []struct {
		name string
		b    []byte
		want string
	}{
		{"not a snapshot", []byte(`{"Workloads":[]}`), "not a snapshot"},
		{"other version", append([]byte(snapshotMagic), 9), "version 9"},
		{"trailing bytes", append(bytes.Clone(good), 0), "1 bytes after the last edge"},
		{"NUL in a label", replace("k8s:app=db", "k8s:app\x00db"), "NUL byte"},
		{"invalid UTF-8", replace("shop", "sh\xffp"), "invalid UTF-8"},
		{"labels out of order", replace("k8s:app=db", "k8s:zzz=db"), "not sorted"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var s Snapshot
			err := s.UnmarshalBinary(c.b)
			if !errors.Is(err, ErrSnapshot) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want ErrSnapshot saying %q", err, c.want)
			}
		})
	}
}

// Ensure a snapshot no Aggregator builds is refused when decoded, though MarshalBinary (which
// trusts its own process) writes it: each case damages one field of a good snapshot.
func TestSnapshotBinaryRejectsWhatNoAggregatorBuilds(t *testing.T) {
	web, db := workload("shop", "k8s:app=web"), workload("shop", "k8s:app=db")
	good := aggregateOf(t, Config{}, []*flows.Event{
		flow(1, web, db, flows.ProtoTCP, 5432),
		flow(2, web, db, flows.ProtoTCP, 5433),
		flow(3, web, world("203.0.113.7"), flows.ProtoTCP, 443),
	})
	webKey := WorkloadKey{Namespace: "shop", Labels: flows.NewLabels("k8s:app=web")}.String()
	if n := len(good.Edges[webKey]); n != 3 {
		t.Fatalf("web has %d edges, want 3", n)
	}
	for _, c := range []struct {
		name   string
		damage func(s *Snapshot)
		want   string
	}{
		{"unknown direction", func(s *Snapshot) { s.Edges[webKey][0].Direction = 7 }, "edge direction 7"},
		{"unknown protocol", func(s *Snapshot) { s.Edges[webKey][0].Proto = 9 }, "edge protocol 9"},
		{"unknown peer kind", func(s *Snapshot) { s.Edges[webKey][0].Peer.Kind = 9 }, "peer kind 9"},
		{"range on a per-port edge", func(s *Snapshot) { s.Edges[webKey][0].EndPort = 6000 }, "edge ports"},
		{"CIDR that does not parse", func(s *Snapshot) {
			for i := range s.Edges[webKey] {
				if p := &s.Edges[webKey][i].Peer; p.Kind == PeerCIDR {
					p.CIDR = "203.0.113.7"
				}
			}
		}, "peer CIDR"},
		{"edges out of order", func(s *Snapshot) {
			es := s.Edges[webKey]
			es[0], es[1] = es[1], es[0]
		}, "out of order"},
		{"workloads out of order", func(s *Snapshot) {
			s.Workloads[0], s.Workloads[1] = s.Workloads[1], s.Workloads[0]
		}, "out of order"},
		{"empty label", func(s *Snapshot) { s.Workloads[0].Key.Labels = flows.Labels{""} }, "empty, oversized"},
		{"oversized namespace", func(s *Snapshot) { s.Workloads[0].Key.Namespace = strings.Repeat("n", 300) }, "empty, oversized"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := cloneSnapshot(good)
			c.damage(s)
			b, err := s.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			var got Snapshot
			err = got.UnmarshalBinary(b)
			if !errors.Is(err, ErrSnapshot) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want ErrSnapshot saying %q", err, c.want)
			}
		})
	}
}

// cloneSnapshot copies a snapshot deeply enough that damaging the copy leaves s alone.
func cloneSnapshot(s *Snapshot) *Snapshot {
	c := *s
	c.Workloads = nil
	for _, w := range s.Workloads {
		c.Workloads = append(c.Workloads, w.clone())
	}
	c.Edges = map[string][]Edge{}
	for k, es := range s.Edges {
		for _, e := range es {
			c.Edges[k] = append(c.Edges[k], e.clone())
		}
	}
	return &c
}

// Ensure a count claiming more records than the bytes left can hold is refused before it is
// allocated: what decoding allocates stays within a small multiple of the input's size, so a
// summary within replicas.Config.MaxSummary cannot claim gigabytes.
func TestSnapshotBinaryBoundsAllocation(t *testing.T) {
	one := Snapshot{Workloads: []Workload{{Key: WorkloadKey{Namespace: "shop", Labels: flows.NewLabels("k8s:app=web")}}}}
	head, err := one.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var empty Snapshot
	bare, err := empty.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	// Both end with their count of edge groups, 0; the empty snapshot's counts of workload
	// keys, workloads and peers are 0 too. One claims a group of as many edges as the bytes
	// could hold at one byte each, the other as many workload keys.
	const size = 1 << 20
	claims := []struct {
		name string
		b    []byte
	}{
		{"edges", append(append(bytes.Clone(head[:len(head)-1]), 1, 0), binary.AppendUvarint(nil, size)...)},
		{"workload keys", append(bytes.Clone(bare[:len(bare)-4]), binary.AppendUvarint(nil, size)...)},
	}
	for _, c := range claims {
		t.Run(c.name, func(t *testing.T) {
			b := append(c.b, make([]byte, size)...)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			var s Snapshot
			err := s.UnmarshalBinary(b)
			runtime.ReadMemStats(&after)
			if !errors.Is(err, ErrSnapshot) {
				t.Fatalf("err = %v, want ErrSnapshot", err)
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 32*uint64(len(b)) {
				t.Errorf("decoding %d bytes allocated %d (%dx)", len(b), alloc, alloc/uint64(len(b)))
			}
		})
	}
}
