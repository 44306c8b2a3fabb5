package replay_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

var base = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// genFlows builds n records the way Hubble Relay sends them: flows from three nodes in time
// order (pairs of records share a timestamp), every 10th a drop to port 5432, every 7th a
// reply, and a lost-events notice after every 25th flow.
func genFlows(n int) []*observerpb.GetFlowsResponse {
	nodes := []string{"kind-worker", "kind-worker2", "kind-control-plane"}
	var out []*observerpb.GetFlowsResponse
	for i := range n {
		ts := timestamppb.New(base.Add(time.Duration(i/2) * time.Millisecond))
		node := nodes[i%len(nodes)]
		port := uint32(8080)
		verdict := flowpb.Verdict_FORWARDED
		evType := int32(4)
		if i%10 == 9 {
			port, verdict, evType = 5432, flowpb.Verdict_DROPPED, 1
		}
		f := &flowpb.Flow{
			Time:     ts,
			Uuid:     fmt.Sprintf("00000000-0000-4000-8000-%012d", i),
			NodeName: node,
			Verdict:  verdict,
			IP:       &flowpb.IP{Source: "10.244.1.10", Destination: "10.244.2.20", IpVersion: flowpb.IPVersion_IPv4},
			L4: &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{
				SourcePort: uint32(40000 + i%20000), DestinationPort: port, Flags: &flowpb.TCPFlags{SYN: true},
			}}},
			Source: &flowpb.Endpoint{Identity: 1234, Namespace: "shop", PodName: "frontend-7d9f-abcde",
				Labels: []string{"k8s:app=frontend", "k8s:io.kubernetes.pod.namespace=shop"}},
			Destination: &flowpb.Endpoint{Identity: 5678, Namespace: "shop", PodName: "cart-5c4b-xyz12",
				Labels: []string{"k8s:app=cart", "k8s:io.kubernetes.pod.namespace=shop"}},
			Type:                  flowpb.FlowType_L3_L4,
			EventType:             &flowpb.CiliumEventType{Type: evType},
			TraceObservationPoint: flowpb.TraceObservationPoint_TO_ENDPOINT,
			TrafficDirection:      flowpb.TrafficDirection_INGRESS,
			IsReply:               wrapperspb.Bool(i%7 == 6),
		}
		out = append(out, &observerpb.GetFlowsResponse{
			ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: f}, NodeName: node, Time: ts,
		})
		if i%25 == 24 {
			out = append(out, &observerpb.GetFlowsResponse{
				ResponseTypes: &observerpb.GetFlowsResponse_LostEvents{LostEvents: &flowpb.LostEvent{
					Source: flowpb.LostEventSource_PERF_EVENT_RING_BUFFER, NumEventsLost: 3, Cpu: wrapperspb.Int32(1),
				}},
				NodeName: node, Time: ts,
			})
		}
	}
	return out
}

// writeJSONPB writes records as `hubble observe -o jsonpb` does and returns the path.
func writeJSONPB(t testing.TB, resps []*observerpb.GetFlowsResponse) string {
	t.Helper()
	var buf bytes.Buffer
	opts := protojson.MarshalOptions{UseProtoNames: true}
	for _, r := range resps {
		b, err := opts.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		buf.Write(b)
		buf.WriteByte('\n')
	}
	p := filepath.Join(t.TempDir(), "flows.jsonpb")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
