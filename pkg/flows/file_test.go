package flows

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
)

const recordings = "../../testdata/flows"

// Lines as `hubble observe -o jsonpb` prints them (the shapes of testdata/flows/boutique.jsonl):
// a SYN to the kube-apiserver, and a lost-events notice.
const (
	lineSYN  = `{"flow":{"time":"2026-03-02T10:00:05.215374052Z","uuid":"c1e8c7a5-3f3c-4b9e-9d5e-0b1f0e8b2a11","verdict":"FORWARDED","IP":{"source":"10.244.0.12","destination":"172.16.0.2","ipVersion":"IPv4"},"l4":{"TCP":{"source_port":41234,"destination_port":443,"flags":{"SYN":true}}},"source":{"ID":412,"identity":31415,"cluster_name":"default","namespace":"ops","labels":["k8s:app.kubernetes.io/name=boutique-operator","k8s:io.cilium.k8s.policy.serviceaccount=boutique-operator","k8s:io.kubernetes.pod.namespace=ops","k8s:pod-template-hash=5bd4c8f7xz"],"pod_name":"boutique-operator-5bd4c8f7xz-qw2rt","workloads":[{"name":"boutique-operator","kind":"Deployment"}]},"destination":{"identity":7,"labels":["reserved:kube-apiserver"]},"Type":"L3_L4","node_name":"gke-shop-default-pool-5c2a7e1d-0fq2","event_type":{"type":4,"sub_type":3},"traffic_direction":"EGRESS","trace_observation_point":"TO_STACK","trace_reason":"NEW","is_reply":false,"Summary":"TCP Flags: SYN"},"node_name":"gke-shop-default-pool-5c2a7e1d-0fq2","time":"2026-03-02T10:00:05.215374052Z"}`
	lineLost = `{"lost_events":{"source":"HUBBLE_RING_BUFFER","num_events_lost":"1543","first":"2026-03-02T10:00:18.556822080Z","last":"2026-03-02T10:00:20.556822080Z"},"node_name":"gke-shop-default-pool-5c2a7e1d-8hkz","time":"2026-03-02T10:00:20.556822080Z"}`
)

// lineBareFlow is the flow object of lineSYN alone, as some tools write it.
var lineBareFlow = lineSYN[len(`{"flow":`):strings.LastIndex(lineSYN, `,"node_name"`)]

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func gz(t *testing.T, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// readAll drains a FileSource; it returns the events and the error that ended it (nil at io.EOF).
func readAll(t *testing.T, cfg FileConfig, log *slog.Logger) ([]*Event, Summary, error) {
	t.Helper()
	src, err := NewFileSource(cfg, nil, log)
	if err != nil {
		return nil, Summary{}, err
	}
	defer src.Close()
	var evs []*Event
	for {
		ev, err := src.Recv(t.Context())
		if errors.Is(err, io.EOF) {
			return evs, src.Stats().Snapshot(), nil
		}
		if err != nil {
			return evs, src.Stats().Snapshot(), err
		}
		evs = append(evs, ev)
	}
}

// plain drops the per-reason counts and malformed places, leaving the comparable counters.
func plain(s Summary) Summary {
	s.SkippedBy, s.MalformedAt = nil, nil
	return s
}

func TestDecodeLine(t *testing.T) {
	lenient := protojson.UnmarshalOptions{DiscardUnknown: true}
	cases := []struct {
		name    string
		line    string
		wantErr string
		check   func(t *testing.T, ev *Event)
	}{
		{name: "real flow", line: lineSYN, check: func(t *testing.T, ev *Event) {
			if ev.Dst.Entity != "kube-apiserver" || ev.Port != 443 || ev.Src.Namespace != "ops" {
				t.Errorf("event %s -> %s:%d", ev.Src.Key(), ev.Dst.Key(), ev.Port)
			}
		}},
		{name: "real lost events", line: lineLost, check: func(t *testing.T, ev *Event) {
			if ev.Kind != KindLost || ev.Lost.Count != 1543 {
				t.Errorf("event %+v", ev)
			}
		}},
		{name: "unknown field in flow (newer Hubble)", line: strings.Replace(lineSYN, `"verdict":`, `"future_field":{"a":[1,2]},"verdict":`, 1),
			check: func(t *testing.T, ev *Event) {
				if ev.Port != 443 {
					t.Errorf("port %d", ev.Port)
				}
			}},
		{name: "unknown top-level field", line: strings.Replace(lineSYN, `{"flow":`, `{"future":"x","flow":`, 1),
			check: func(t *testing.T, ev *Event) {
				if ev.Port != 443 {
					t.Errorf("port %d", ev.Port)
				}
			}},
		{name: "unknown enum value (newer Hubble)", line: strings.Replace(lineSYN, `"trace_reason":"NEW"`, `"trace_reason":"SOMETHING_NEW"`, 1),
			check: func(t *testing.T, ev *Event) {
				if ev.Port != 443 {
					t.Errorf("port %d", ev.Port)
				}
			}},
		{name: "bare flow object", line: lineBareFlow, check: func(t *testing.T, ev *Event) {
			if ev.Port != 443 || ev.Node != "gke-shop-default-pool-5c2a7e1d-0fq2" {
				t.Errorf("event %+v", ev)
			}
		}},
		{name: "not JSON", line: "hello", wantErr: "not a JSON object"},
		{name: "truncated JSON", line: lineSYN[:200], wantErr: "decode flow"},
		{name: "wrong type", line: `{"flow":{"time":42}}`, wantErr: "decode flow"},
		{name: "empty object", line: `{}`, wantErr: "no flow"},
	}
	n := NewNormalizer(nil)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := DecodeLine([]byte(tc.line), protojson.UnmarshalOptions{}, lenient)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("DecodeLine() error = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("DecodeLine() error = %v", err)
			}
			ev, skip := n.Response(resp)
			if skip != SkipNone {
				t.Fatalf("skip %q", skip)
			}
			tc.check(t, ev)
		})
	}
}

// Ensure every committed recording reads without a malformed line, and `-o json` output
// (the same objects) reads the same way.
func TestFileSourceRecordings(t *testing.T) {
	for _, name := range []string{"starwars.jsonl", "boutique.jsonl", "boutique-day2.jsonl", "boutique-newconn.jsonl"} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(recordings, name)
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			lines := bytes.Count(data, []byte("\n"))
			evs, sum, err := readAll(t, FileConfig{Paths: []string{p}, Strict: true}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if sum.Malformed != 0 || int(sum.Events+sum.Skipped) != lines || int(sum.Events) != len(evs) || sum.Skipped == 0 {
				t.Errorf("summary %+v over %d lines", sum, lines)
			}
			// The same file gzipped reads the same.
			gzEvs, gzSum, err := readAll(t, FileConfig{Paths: []string{writeFile(t, name+".gz", gz(t, data))}, Strict: true}, nil)
			if err != nil || !reflect.DeepEqual(gzSum, sum) || len(gzEvs) != len(evs) {
				t.Errorf("gzip copy: summary %+v, err %v; want %+v", gzSum, err, sum)
			}
		})
	}
}

func TestFileSource(t *testing.T) {
	good := lineSYN + "\n" + lineLost + "\n"
	valid := writeFile(t, "good.jsonl", []byte(good))
	full := gz(t, []byte(strings.Repeat(good, 200)))
	cases := []struct {
		name       string
		cfg        func(t *testing.T) FileConfig
		wantEvents int
		wantSum    Summary
		wantErr    string // substring of the error that ends the run; "" = clean EOF
		newErr     string // substring of NewFileSource's error
		lineErr    int    // with wantErr: the LineError's line
	}{
		{name: "malformed line is counted and skipped", cfg: func(t *testing.T) FileConfig {
			return FileConfig{Paths: []string{writeFile(t, "f.jsonl", []byte(lineSYN+"\n{broken\n\n"+lineLost+"\n"))}}
		}, wantEvents: 2, wantSum: Summary{Events: 2, Malformed: 1, Lost: 1543}},
		{name: "strict fails at the malformed line", cfg: func(t *testing.T) FileConfig {
			return FileConfig{Paths: []string{writeFile(t, "f.jsonl", []byte(lineSYN+"\n{broken\n"+lineLost+"\n"))}, Strict: true}
		}, wantEvents: 1, wantSum: Summary{Events: 1, Malformed: 1}, wantErr: "f.jsonl:2: decode flow", lineErr: 2},
		{name: "last line without newline", cfg: func(t *testing.T) FileConfig {
			return FileConfig{Paths: []string{writeFile(t, "f.jsonl", []byte(lineLost+"\n"+lineSYN))}}
		}, wantEvents: 2, wantSum: Summary{Events: 2, Lost: 1543}},
		{name: "CRLF line ends", cfg: func(t *testing.T) FileConfig {
			return FileConfig{Paths: []string{writeFile(t, "f.jsonl", []byte(lineSYN+"\r\n"+lineLost+"\r\n"))}}
		}, wantEvents: 2, wantSum: Summary{Events: 2, Lost: 1543}},
		{name: "empty file", cfg: func(t *testing.T) FileConfig {
			return FileConfig{Paths: []string{writeFile(t, "empty.jsonl", nil)}}
		}},
		{name: "empty gzip file", cfg: func(t *testing.T) FileConfig {
			return FileConfig{Paths: []string{writeFile(t, "empty.jsonl.gz", gz(t, nil))}}
		}},
		{name: "truncated gzip", cfg: func(t *testing.T) FileConfig {
			return FileConfig{Paths: []string{writeFile(t, "cut.jsonl.gz", full[:len(full)/2])}}
		}, wantEvents: -1, wantErr: "cut.jsonl.gz:"},
		{name: "corrupt gzip header", cfg: func(t *testing.T) FileConfig {
			return FileConfig{Paths: []string{writeFile(t, "bad.jsonl.gz", []byte("\x1f\x8bnot gzip at all"))}}
		}, wantErr: "bad.jsonl.gz: gzip"},
		{name: "corrupt gzip body", cfg: func(t *testing.T) FileConfig {
			b := append([]byte(nil), full...)
			for i := 20; i < 60; i++ {
				b[i] ^= 0xff
			}
			return FileConfig{Paths: []string{writeFile(t, "flip.jsonl.gz", b)}}
		}, wantEvents: -1, wantErr: "flip.jsonl.gz:"},
		{name: "stdin", cfg: func(t *testing.T) FileConfig {
			return FileConfig{Paths: []string{"-"}, Stdin: strings.NewReader(good)}
		}, wantEvents: 2, wantSum: Summary{Events: 2, Lost: 1543}},
		{name: "stdin gzip", cfg: func(t *testing.T) FileConfig {
			return FileConfig{Paths: []string{"-"}, Stdin: bytes.NewReader(gz(t, []byte(good)))}
		}, wantEvents: 2, wantSum: Summary{Events: 2, Lost: 1543}},
		{name: "several files in order, gzip among them", cfg: func(t *testing.T) FileConfig {
			return FileConfig{Paths: []string{valid, writeFile(t, "b.jsonl.gz", gz(t, []byte(lineSYN+"\n"))), "-"}, Stdin: strings.NewReader(lineLost)}
		}, wantEvents: 4, wantSum: Summary{Events: 4, Lost: 2 * 1543}},
		{name: "missing file", cfg: func(t *testing.T) FileConfig {
			return FileConfig{Paths: []string{filepath.Join(t.TempDir(), "nope.jsonl")}}
		}, newErr: "nope.jsonl"},
		{name: "no paths", cfg: func(t *testing.T) FileConfig { return FileConfig{} }, newErr: "no flow files"},
		{name: "empty path", cfg: func(t *testing.T) FileConfig { return FileConfig{Paths: []string{""}} }, newErr: "empty flow file path"},
		{name: "stdin twice", cfg: func(t *testing.T) FileConfig { return FileConfig{Paths: []string{"-", "-"}} }, newErr: "more than once"},
		{name: "directory of recordings", cfg: func(t *testing.T) FileConfig {
			d := t.TempDir()
			for name, data := range map[string][]byte{"a.jsonl": []byte(lineSYN + "\n"), "b.json.gz": gz(t, []byte(lineLost+"\n")), "notes.txt": []byte("x")} {
				if err := os.WriteFile(filepath.Join(d, name), data, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			return FileConfig{Paths: []string{d}, Strict: true}
		}, wantEvents: 2, wantSum: Summary{Events: 2, Lost: 1543}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg(t)
			var logBuf bytes.Buffer
			evs, sum, err := readAll(t, cfg, slog.New(slog.NewTextHandler(&logBuf, nil)))
			if tc.newErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.newErr) {
					t.Fatalf("NewFileSource() error = %v, want %q", err, tc.newErr)
				}
				return
			}
			if tc.wantErr == "" && err != nil {
				t.Fatalf("Recv() error = %v, want clean EOF", err)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Recv() error = %v, want %q", err, tc.wantErr)
				}
				if tc.lineErr != 0 {
					var le *LineError
					if !errors.As(err, &le) || le.Line != tc.lineErr {
						t.Errorf("error %v is not a LineError at line %d", err, tc.lineErr)
					}
				}
			}
			if tc.wantEvents >= 0 && len(evs) != tc.wantEvents {
				t.Errorf("got %d events, want %d", len(evs), tc.wantEvents)
			}
			if tc.wantEvents >= 0 && !reflect.DeepEqual(plain(sum), tc.wantSum) {
				t.Errorf("summary %+v, want %+v", sum, tc.wantSum)
			}
			if sum.Malformed > 0 && !cfg.Strict && !strings.Contains(logBuf.String(), "line=2") {
				t.Errorf("log does not name the malformed line: %s", logBuf.String())
			}
		})
	}
}

// Ensure files are read in the order given.
func TestFileSourceOrder(t *testing.T) {
	a := writeFile(t, "a.jsonl", []byte(lineSYN+"\n"))
	b := writeFile(t, "b.jsonl", []byte(lineLost+"\n"))
	evs, _, err := readAll(t, FileConfig{Paths: []string{b, a}}, nil)
	if err != nil || len(evs) != 2 || evs[0].Kind != KindLost || evs[1].Kind != KindFlow {
		t.Fatalf("events %v, err %v: want lost then flow", evs, err)
	}
}

// Ensure a line longer than MaxLineBytes is reported as malformed, the lines after it are
// read, and --strict stops at it: just over the limit, and far over it.
func TestFileSourceLongLine(t *testing.T) {
	for _, over := range []int{1, 1 << 20} {
		var b bytes.Buffer
		w := bufio.NewWriter(&b)
		w.WriteString(lineSYN + "\n")
		prefix, suffix := `{"flow":{"Summary":"`, "\"}}"
		w.WriteString(prefix)
		w.WriteString(strings.Repeat("x", MaxLineBytes+over-len(prefix)-len(suffix)))
		w.WriteString(suffix + "\n" + lineLost + "\n")
		w.Flush()
		p := writeFile(t, "long.jsonl", b.Bytes())

		evs, sum, err := readAll(t, FileConfig{Paths: []string{p}}, nil)
		if err != nil || len(evs) != 2 || sum.Malformed != 1 {
			t.Errorf("%d bytes over: lenient: %d events, summary %+v, err %v; want 2 events, 1 malformed", over, len(evs), sum, err)
		}
		evs, _, err = readAll(t, FileConfig{Paths: []string{p}, Strict: true}, nil)
		var le *LineError
		if !errors.As(err, &le) || le.Line != 2 || len(evs) != 1 {
			t.Errorf("%d bytes over: strict: %d events, err %v; want 1 event and a LineError at line 2", over, len(evs), err)
		}
	}
}
