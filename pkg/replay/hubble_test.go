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
// `hubble observe --all -o jsonpb` prints the recording back (lost-events notices included),
// and its filters select the same records.
func TestHubbleCLI(t *testing.T) {
	hubble := hubblecli.Path(t)
	rec, _, err := replay.Load(t.Context(), []string{"../../testdata/flows/boutique.jsonl"}, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _, addr := start(t, rec, replay.Options{})
	all := rec.Responses()
	fi := flowIndexes(all)
	tests := []struct {
		name string
		args []string
		want []*observerpb.GetFlowsResponse
	}{
		{"all", []string{"--all"}, all},
		{"last 3", []string{"--last", "3"}, all[fi[len(fi)-3] : fi[len(fi)-1]+1]},
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
			if len(got) != len(tt.want) {
				t.Fatalf("hubble %v printed %d records, want %d", tt.args, len(got), len(tt.want))
			}
			for i := range got {
				if !proto.Equal(got[i], tt.want[i]) {
					t.Fatalf("hubble %v line %d = %v, want %v", tt.args, i+1, got[i], tt.want[i])
				}
			}
		})
	}
}
