package aggregate

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"path/filepath"
	"reflect"
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
