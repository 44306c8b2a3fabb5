package replay_test

import (
	"bufio"
	"bytes"
	"os/exec"
	"testing"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"github.com/recommender/recommender/internal/hubblecli"
	"github.com/recommender/recommender/pkg/replay"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// Ensure that the real hubble CLI reads the replay relay as it reads Hubble Relay:
// `hubble observe --all -o jsonpb` prints the recording back, and its filters select the
// same records.
func TestHubbleCLI(t *testing.T) {
	hubble := hubblecli.Path(t)
	rec, _, err := replay.Load(t.Context(), []string{"../../testdata/flows/boutique.jsonl"}, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _, addr := start(t, rec, replay.Options{})
	all := rec.Responses()
	flowsOnly := selectRecs(all, func(*flowpb.Flow) bool { return true })
	var lastFlows []*observerpb.GetFlowsResponse
	for _, r := range all {
		if r.GetFlow() != nil {
			lastFlows = append(lastFlows, r)
		}
	}
	tests := []struct {
		name string
		args []string
		want []*observerpb.GetFlowsResponse
	}{
		{"all", []string{"--all"}, flowsOnly},
		{"last 3", []string{"--last", "3"}, lastFlows[len(lastFlows)-3:]},
		{"dropped", []string{"--all", "--verdict", "DROPPED"}, selectRecs(all, func(f *flowpb.Flow) bool { return f.GetVerdict() == flowpb.Verdict_DROPPED })},
		{"to port 53", []string{"--all", "--to-port", "53"}, selectRecs(all, func(f *flowpb.Flow) bool {
			return f.GetL4().GetUDP().GetDestinationPort() == 53 || f.GetL4().GetTCP().GetDestinationPort() == 53
		})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"observe", "--server", addr, "-o", "jsonpb"}, tt.args...)
			cmd := exec.CommandContext(t.Context(), hubble, args...)
			cmd.Env = []string{"HOME=" + t.TempDir(), "PATH=/usr/bin:/bin"}
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("hubble %v: %v\n%s", args, err, stderr.String())
			}
			var got []*observerpb.GetFlowsResponse
			sc := bufio.NewScanner(bytes.NewReader(out))
			sc.Buffer(nil, 16<<20)
			for sc.Scan() {
				r := &observerpb.GetFlowsResponse{}
				if err := protojson.Unmarshal(sc.Bytes(), r); err != nil {
					t.Fatalf("hubble printed %q: %v", sc.Text(), err)
				}
				got = append(got, r)
			}
			// hubble prints lost-events notices to stderr, not as jsonpb lines.
			want := selectRecs(tt.want, func(*flowpb.Flow) bool { return true })
			var wantFlows []*observerpb.GetFlowsResponse
			for _, r := range want {
				if r.GetFlow() != nil {
					wantFlows = append(wantFlows, r)
				}
			}
			if len(got) != len(wantFlows) {
				t.Fatalf("hubble %v printed %d flows, want %d", tt.args, len(got), len(wantFlows))
			}
			for i := range got {
				if !proto.Equal(got[i], wantFlows[i]) {
					t.Fatalf("hubble %v line %d = %v, want %v", tt.args, i+1, got[i], wantFlows[i])
				}
			}
		})
	}
}
