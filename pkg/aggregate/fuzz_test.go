package aggregate

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/recommender/recommender/pkg/flows"
)

// FuzzCommit drives every string and number that becomes part of a store key (namespace,
// labels, owner, node, peer names and addresses, DNS query and answers, HTTP path, port)
// through Add and Commit: a record is either rejected or committed, a commit never fails, and
// what was committed reads back as the Aggregator holds it.
func FuzzCommit(f *testing.F) {
	f.Add("shop", "k8s:app=web", "Deployment/web", "node-1", "203.0.113.7", "api.example.com.", "/v1", uint16(443), uint8(1), int64(0))
	f.Add("", "", "", "", "", "", "", uint16(0), uint8(0), int64(1<<62))
	f.Add("ns", "k8s:a=b\x00c", "x", "\xff", "::1", ".", strings.Repeat("p", 5000), uint16(65535), uint8(5), int64(-1))
	f.Fuzz(func(t *testing.T, ns, label, owner, node, ip, name, path string, port uint16, proto uint8, offset int64) {
		a := newAgg(t, Config{})
		s := openStore(t, "", Options{NoSync: true})
		src := workload(ns, label, "k8s:"+label)
		src.Workload = owner
		when := at(0).Add(time.Duration(offset))
		pr := flows.Protocol(proto % 6)
		evs := []*flows.Event{
			with(flow(0, src, workload(name, label), pr, port), func(e *flows.Event) { e.Node, e.Time = node, when }),
			with(flow(1, src, world(ip, name), pr, port), func(e *flows.Event) { e.Node = node }),
			with(dnsRequest(2, src, dns, name), func(e *flows.Event) { e.Node = node }),
			with(dnsResponse(2, src, dns, name, ip, name), func(e *flows.Event) { e.Node = node }),
			with(flow(3, src, entity(name), pr, port), func(e *flows.Event) {
				e.Type, e.L7, e.Node = flows.EventL7, &flows.L7{HTTP: &flows.HTTP{Method: name, Path: path}}, node
			}),
			{Kind: flows.KindLost, Time: at(4), Node: node, Lost: &flows.Lost{Count: 1}},
		}
		for _, ev := range evs {
			a.Add(ev)
		}
		if err := s.Commit(a.TakeBatch(), nil); err != nil {
			t.Fatalf("Commit = %v; a malformed record must be rejected before it reaches the store", err)
		}
		got, err := s.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(got, a.Snapshot(), snapshotOpts); d != "" {
			t.Errorf("stored snapshot differs from the aggregator's (-stored +memory):\n%s", d)
		}
	})
}

// FuzzOpen opens arbitrary file contents, read-only and for writing: Open may refuse them but
// must not panic, and must leave a refused file as it was.
func FuzzOpen(f *testing.F) {
	dir := f.TempDir()
	good := filepath.Join(dir, "good.db")
	s, err := Open(good, Options{})
	if err != nil {
		f.Fatal(err)
	}
	a, _ := NewAggregator(Config{}, nil, nil)
	for _, ev := range mixedEvents() {
		a.Add(ev)
	}
	if err := s.Commit(a.TakeBatch(), nil); err != nil {
		f.Fatal(err)
	}
	s.Close()
	valid, err := os.ReadFile(good)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid, 0, byte(0))
	f.Add(valid, 5000, byte(0xff))
	f.Add(valid[:16<<10], 0, byte(0))
	f.Add([]byte("hello"), 0, byte(0))
	f.Fuzz(func(t *testing.T, data []byte, at int, b byte) {
		data = bytes.Clone(data)
		if len(data) > 0 && at >= 0 {
			data[at%len(data)] ^= b
		}
		path := filepath.Join(t.TempDir(), "store.db")
		for _, ro := range []bool{true, false} {
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := Open(path, Options{ReadOnly: ro, NoSync: true})
			if err != nil {
				if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrNotStore) && !errors.Is(err, ErrSchema) {
					t.Fatalf("Open(readOnly=%v) = %v, want ErrCorrupt, ErrNotStore or ErrSchema", ro, err)
				}
				if after, _ := os.ReadFile(path); !bytes.Equal(after, data) {
					t.Fatalf("Open(readOnly=%v) refused the file and changed it", ro)
				}
				continue
			}
			_, _ = s.Snapshot() // may find damage the open check did not reach; must not panic
			s.Close()
		}
	})
}

// FuzzSnapshotBinary feeds UnmarshalBinary what a replica may be sent: damaged or made-up
// summaries. It must fail or return a snapshot that encodes back to itself and that Merge
// takes (the puller merges it at once), never panic.
func FuzzSnapshotBinary(f *testing.F) {
	a, _ := NewAggregator(Config{MaxPorts: 2}, nil, nil)
	for _, ev := range mixedEvents() {
		a.Add(ev)
	}
	for _, s := range []*Snapshot{a.Snapshot(), {}} {
		b, err := s.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var s Snapshot
		if err := s.UnmarshalBinary(data); err != nil {
			if !errors.Is(err, ErrSnapshot) {
				t.Fatalf("err = %v, want ErrSnapshot", err)
			}
			return
		}
		b, err := s.MarshalBinary()
		if err != nil {
			t.Fatalf("a decoded snapshot does not encode: %v", err)
		}
		var again Snapshot
		if err := again.UnmarshalBinary(b); err != nil {
			t.Fatalf("a decoded snapshot, encoded again, does not decode: %v", err)
		}
		if !reflect.DeepEqual(normalized(&again), normalized(&s)) {
			t.Fatalf("decoded twice: %+v, once: %+v", again, s)
		}
		Merge(&s, &s)
	})
}
