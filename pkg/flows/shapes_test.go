package flows

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf16"
)

const shapes = "testdata/shapes"

// readFolded reads a recording through a Folder, as every command does.
func readFolded(t *testing.T, norm *Normalizer, cfg FileConfig) ([]*Event, Summary, error) {
	t.Helper()
	src, err := NewFileSource(cfg, norm, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	f := NewFolder(src, src.Stats())
	var evs []*Event
	for {
		ev, err := f.Recv(t.Context())
		if errors.Is(err, io.EOF) {
			return evs, src.Stats().Snapshot(), nil
		}
		if err != nil {
			return evs, src.Stats().Snapshot(), err
		}
		evs = append(evs, ev)
	}
}

// Ensure every Hubble output shape in testdata/shapes (written for this project after the
// shapes real clusters print) reads in strict mode into the events and skip reasons it
// stands for.
func TestShapes(t *testing.T) {
	tests := []struct {
		file  string
		skips map[SkipReason]uint64
		check func(t *testing.T, evs []*Event, n *Normalizer)
	}{
		{"l7-only-dns.jsonl", nil, func(t *testing.T, evs []*Event, _ *Normalizer) {
			// Each request stands for its connection; each response teaches the answer and
			// never stands for a connection.
			req, res := 0, 0
			for _, ev := range evs {
				if ev.L7 == nil || ev.L7.DNS == nil || ev.Src.Labels.String() != "k8s:app=web,k8s:io.cilium.k8s.policy.serviceaccount=web" || ev.Port != 53 {
					t.Fatalf("event %+v: want web -> kube-dns :53 with DNS", ev)
				}
				if ev.L7.DNS.Response {
					res++
					if ev.Connection {
						t.Errorf("response %+v stands for a connection", ev)
					}
				} else if req++; !ev.Connection {
					t.Errorf("request %+v does not stand for its connection", ev)
				}
			}
			if req != 3 || res != 3 {
				t.Errorf("%d requests, %d responses, want 3 and 3", req, res)
			}
		}},
		// Responses fold into their requests (same connection, method and path).
		{"l7-only-http.jsonl", map[SkipReason]uint64{SkipDuplicate: 3}, func(t *testing.T, evs []*Event, _ *Normalizer) {
			conns := 0
			for _, ev := range evs {
				if ev.Connection {
					conns++
					if ev.L7.HTTP.Code != 0 || ev.L7.HTTP.Path != "/v1/items" || ev.Port != 8080 || ev.Dst.Labels.String() != "k8s:app=api,k8s:io.cilium.k8s.policy.serviceaccount=api" {
						t.Errorf("connection %+v: want the request web -> api:8080 GET /v1/items", ev.L7.HTTP)
					}
				}
			}
			if conns != 3 {
				t.Errorf("%d events stand for a connection, want the 3 requests", conns)
			}
		}},
		{"exporter-fieldmask.jsonl", map[SkipReason]uint64{SkipReply: 1, SkipNoIdentity: 2, SkipNoEndpoint: 1, SkipNoL4: 1}, func(t *testing.T, evs []*Event, n *Normalizer) {
			// The ICMPv6 drop between two unnamed ends is world to world; the label-less pods
			// are refused and named, never turned into selectors or CIDRs.
			if len(evs) != 1 || evs[0].Src.Kind != PeerWorld || evs[0].Dst.Kind != PeerWorld || evs[0].Type != EventDrop || evs[0].Proto != ProtoICMPv6 {
				t.Errorf("events %+v, want the world-to-world ICMPv6 drop", evs)
			}
			got := n.Unresolved()
			if len(got) != 3 || !strings.HasPrefix(got[0], "shop/api-5c9d7f6b8-q8w7e (pods api-5c9d7f6b8-q8w7e): flow carries no labels") || !strings.Contains(got[0], "not connected to the cluster") {
				t.Errorf("Unresolved() = %q, want api, batch and web named with the reason", got)
			}
		}},
		{"old-shapes.jsonl", map[SkipReason]uint64{SkipReply: 1, SkipNoIdentity: 1}, func(t *testing.T, evs []*Event, n *Normalizer) {
			if len(evs) != 2 {
				t.Fatalf("events %+v, want the SYN and the kubelet probe", evs)
			}
			if evs[1].Src.Key() != "entity:host" || evs[1].Dst.Kind != PeerWorkload {
				t.Errorf("probe from identity 1 (host + kube-apiserver) = %s -> %s, want host -> web", evs[1].Src.Key(), evs[1].Dst.Key())
			}
			if got := n.Unresolved(); len(got) != 1 || !strings.Contains(got[0], "reserved:world") {
				t.Errorf("Unresolved() = %q, want the pod reported as world", got)
			}
		}},
		{"bare-flows.jsonl", nil, func(t *testing.T, evs []*Event, _ *Normalizer) {
			if len(evs) != 2 || evs[1].Time.Compare(evs[0].Time) != 0 {
				t.Errorf("events %+v: want 2, the one without time at the time of the one before", evs)
			}
		}},
		{"no-time.jsonl", nil, func(t *testing.T, evs []*Event, _ *Normalizer) {
			fi, err := os.Stat(filepath.Join(shapes, "no-time.jsonl"))
			if err != nil {
				t.Fatal(err)
			}
			if len(evs) != 1 || !evs[0].Time.Equal(fi.ModTime()) {
				t.Errorf("events %+v, want one at the file's modification time %s", evs, fi.ModTime())
			}
		}},
		{"pretty.json", nil, func(t *testing.T, evs []*Event, _ *Normalizer) {
			if len(evs) != 2 || evs[0].Port != 8080 || evs[1].Src.Key() != "entity:host" {
				t.Errorf("events %+v, want the two pretty-printed records", evs)
			}
		}},
		{"bom.jsonl", nil, func(t *testing.T, evs []*Event, _ *Normalizer) {
			if len(evs) != 1 {
				t.Errorf("events %+v, want the line after the byte-order mark", evs)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			n := NewNormalizer(nil)
			evs, sum, err := readFolded(t, n, FileConfig{Paths: []string{filepath.Join(shapes, tt.file)}, Strict: true})
			if err != nil {
				t.Fatalf("strict read: %v", err)
			}
			for _, r := range SkipReasons() {
				if sum.SkippedBy[r] != tt.skips[r] {
					t.Errorf("skipped %s = %d, want %d (summary %s)", r, sum.SkippedBy[r], tt.skips[r], sum)
				}
			}
			tt.check(t, evs, n)
		})
	}
}

// Ensure a pod named without labels is resolved through a PodResolver to the same workload
// key a flow with labels gives it, and refused when the table does not know it.
func TestShapesResolved(t *testing.T) {
	table := NewPodTable([]Pod{
		{Namespace: "shop", Name: "web-6d5f8c7b9d-x2x4k", Labels: map[string]string{"app": "web", "pod-template-hash": "6d5f8c7b9d"}, ServiceAccount: "web", Workload: "Deployment/web"},
		{Namespace: "shop", Name: "api-5c9d7f6b8-q8w7e", Labels: map[string]string{"app": "api"}, ServiceAccount: "api", Workload: "Deployment/api"},
	})
	n := NewNormalizer(nil).WithResolver(table)
	evs, sum, err := readFolded(t, n, FileConfig{Paths: []string{filepath.Join(shapes, "exporter-fieldmask.jsonl")}, Strict: true})
	if err != nil {
		t.Fatal(err)
	}
	var syn *Event
	for _, ev := range evs {
		if ev.Port == 8080 {
			syn = ev
		}
	}
	if syn == nil || syn.Src.Key() != "shop/k8s:app=web,k8s:io.cilium.k8s.policy.serviceaccount=web" || syn.Dst.Workload != "Deployment/api" {
		t.Fatalf("events %+v: want web -> api resolved with the labels a flow would carry", evs)
	}
	if sum.SkippedBy[SkipNoIdentity] != 1 || !slices.ContainsFunc(n.Unresolved(), func(s string) bool { return strings.Contains(s, "batch-1a2b3") && strings.Contains(s, "no such pod") }) {
		t.Errorf("summary %s, unresolved %q: want batch refused as unknown to the cluster", sum, n.Unresolved())
	}
}

// Ensure a file of which nothing is readable fails without --strict, naming the file and the
// first malformed line (issue 15 point 5): binary garbage, UTF-16 with and without BOM. A file
// with some readable records still passes, with the malformed ones counted and placed.
func TestUnreadableFile(t *testing.T) {
	good, err := os.ReadFile(filepath.Join(shapes, "bom.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	good = bytes.TrimPrefix(good, []byte{0xef, 0xbb, 0xbf})
	utf16le := func(bom bool) []byte {
		var b []byte
		if bom {
			b = append(b, 0xff, 0xfe)
		}
		for _, u := range utf16.Encode([]rune(string(good))) {
			b = append(b, byte(u), byte(u>>8))
		}
		return b
	}
	garbage := make([]byte, 64<<10)
	for i := range garbage {
		garbage[i] = byte(i*7919 + i>>3)
	}
	tests := []struct {
		name string
		data []byte
		want string // "" = reads
	}{
		{"binary garbage", garbage, "no readable flow record"},
		{"utf-16 with bom", utf16le(true), "UTF-16"},
		{"utf-16 without bom", utf16le(false), "UTF-16"},
		// A truncated object does not swallow the record on the next line.
		{"one good line after garbage and a truncated object", append([]byte("garbage\n{\"flow\":{\"time\":\n"), good...), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := writeFile(t, "capture.jsonl", tt.data)
			evs, sum, err := readAll(t, FileConfig{Paths: []string{p}}, nil)
			if tt.want == "" {
				if err != nil || len(evs) != 1 || sum.Malformed != 2 || len(sum.MalformedAt) != 2 || !strings.HasPrefix(sum.MalformedAt[0], p+":1:") {
					t.Fatalf("err %v, %d events, summary %s: want 1 event and the 2 malformed lines placed", err, len(evs), sum)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), p+":1:") {
				t.Fatalf("err %v, want one naming %s:1 and %q", err, p, tt.want)
			}
		})
	}
}

// Ensure an L7 request after an L3/L4 record of the same connection is evidence only, and one
// after the fold window stands for its connection again.
func TestFolderConnection(t *testing.T) {
	t0 := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	mk := func(typ EventType, at time.Duration) *Event {
		ev := &Event{Kind: KindFlow, Type: typ, Time: t0.Add(at), Proto: ProtoTCP, Port: 8080, SrcPort: 41000, SrcAddr: "10.0.1.10", DstAddr: "10.0.2.20", Verdict: VerdictForwarded}
		if typ == EventL7 {
			ev.L7 = &L7{HTTP: &HTTP{Method: "GET", Path: "/"}}
		}
		return ev
	}
	src := &sliceSource{events: []*Event{mk(EventTrace, 0), mk(EventL7, time.Second), mk(EventL7, 10*time.Second)}}
	f := NewFolder(src, nil)
	var got []bool
	for {
		ev, err := f.Recv(t.Context())
		if err != nil {
			break
		}
		if ev.Type == EventL7 {
			got = append(got, ev.Connection)
		}
	}
	if !slices.Equal(got, []bool{false, true}) {
		t.Errorf("Connection of the two requests = %v, want [false true]", got)
	}
}

// Ensure refused pods are grouped under the workload their names point to, for the report.
func TestOwnerGuess(t *testing.T) {
	for pod, want := range map[string]string{
		"deathstar-7848d6c4d5-th9v2":      "deathstar",
		"node-local-dns-r99x7":            "node-local-dns",
		"productpage-v1-6b746f74dc-ffh56": "productpage-v1",
		"xwing":                           "xwing",
		"db-0":                            "db-0",
		"api-5c9d7f6b8-q8w7e":             "api-5c9d7f6b8-q8w7e", // vowels: not a generated suffix
	} {
		if got := ownerGuess(pod); got != want {
			t.Errorf("ownerGuess(%q) = %q, want %q", pod, got, want)
		}
	}
}
