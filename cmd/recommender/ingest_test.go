package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// writeRecording writes n client->server TCP flows between two workloads on distinct ports as
// `hubble observe -o jsonpb` does.
func writeRecording(t *testing.T, dir string, n int) string {
	t.Helper()
	var b bytes.Buffer
	m := protojson.MarshalOptions{UseProtoNames: true}
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for i := range n {
		f := &flowpb.Flow{
			Time: timestamppb.New(t0.Add(time.Duration(i) * time.Millisecond)), Uuid: fmt.Sprintf("u%d", i),
			NodeName: "node-1", Verdict: flowpb.Verdict_FORWARDED, EventType: &flowpb.CiliumEventType{Type: 4},
			IP: &flowpb.IP{Source: "10.0.0.1", Destination: "10.0.0.2"},
			L4: &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{
				SourcePort: uint32(40000 + i), DestinationPort: uint32(80 + i%3), Flags: &flowpb.TCPFlags{SYN: true},
			}}},
			Source:                &flowpb.Endpoint{Namespace: "shop", Labels: []string{"k8s:app=web"}},
			Destination:           &flowpb.Endpoint{Namespace: "shop", Labels: []string{"k8s:app=api"}},
			TraceObservationPoint: flowpb.TraceObservationPoint_FROM_ENDPOINT,
			IsReply:               wrapperspb.Bool(false),
		}
		line, err := m.Marshal(&observerpb.GetFlowsResponse{
			ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: f}, NodeName: f.NodeName, Time: f.Time,
		})
		if err != nil {
			t.Fatal(err)
		}
		b.Write(append(line, '\n'))
	}
	path := filepath.Join(dir, "flows.jsonpb")
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func execute(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.ExecuteContext(t.Context())
	return out.String(), err
}

// Ensure that ingest fills the store once (a second ingest of the same recording adds
// nothing), that status -o json reports integer workloads and edges, and that compact keeps
// the content.
func TestIngestStatusCompact(t *testing.T) {
	dir := t.TempDir()
	rec := writeRecording(t, dir, 30)
	db := filepath.Join(dir, "store.db")
	for i, want := range []string{"ingested 30 flows", "ingested 0 flows"} {
		out, err := execute(t, "ingest", "--flows", rec, "--db", db, "--batch-size", "7")
		if err != nil {
			t.Fatalf("ingest #%d: %v", i+1, err)
		}
		if !strings.Contains(out, want) || !strings.Contains(out, "flows/s") {
			t.Errorf("ingest #%d output:\n%s\nwant %q and a rate", i+1, out, want)
		}
	}
	status := func() map[string]any {
		out, err := execute(t, "status", "--db", db, "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		var st map[string]any
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("status -o json is not one JSON object: %v\n%s", err, out)
		}
		return st
	}
	st := status()
	// 2 workloads; web egress and api ingress on ports 80, 81, 82.
	if st["workloads"] != float64(2) || st["edges"] != float64(6) || st["flows"] != float64(30) {
		t.Errorf("status = %v, want 2 workloads, 6 edges, 30 flows", st)
	}
	if out, err := execute(t, "compact", "--db", db); err != nil || !strings.Contains(out, "compacted") {
		t.Fatalf("compact: %v\n%s", err, out)
	}
	if got := status(); fmt.Sprint(got["edges"], got["flows"]) != "6 30" {
		t.Errorf("status after compact = %v", got)
	}
	out, err := execute(t, "status", "--db", db)
	if err != nil || !strings.Contains(out, "workloads:") {
		t.Errorf("status text: %v\n%s", err, out)
	}
}

// Ensure that bad invocations fail before touching anything.
func TestIngestFlagErrors(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"ingest", "--flows", "x", "--hubble-server", "localhost:4245", "--db", filepath.Join(dir, "a.db")},
		{"ingest", "--flows", "x"},
		{"status"},
		{"status", "--db", filepath.Join(dir, "a.db"), "-o", "yaml"},
		{"compact"},
	} {
		if _, err := execute(t, args...); err == nil {
			t.Errorf("%v succeeded", args)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "a.db")); !os.IsNotExist(err) {
		t.Error("a failed invocation created the store")
	}
}
