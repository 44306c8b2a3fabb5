package synth

import (
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	policyaudit "github.com/recommender/recommender/pkg/audit"
	"github.com/recommender/recommender/pkg/flows"

	"github.com/recommender/recommender/internal/flowgen"
)

// meshRecording writes flowgen's two-cluster mesh to a file, as `hubble observe -o jsonpb`
// against the mesh's relay would.
func meshRecording(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "mesh.jsonl")
	if err := flowgen.WriteMesh(path); err != nil {
		t.Fatal(err)
	}
	return path
}

// meshEvents reads the recording's events the way the daemon sees them.
func meshEvents(t *testing.T, path string) []*flows.Event {
	t.Helper()
	src, err := flows.NewFileSource(flows.FileConfig{Paths: []string{path}, Strict: true}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var out []*flows.Event
	folder := flows.NewFolder(src, src.Stats())
	for {
		ev, err := folder.Recv(t.Context())
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ev)
	}
}

// Ensure a recording of a ClusterMesh without --cluster-name is refused with an error that
// names the clusters and the flag, rather than proposing policies for both clusters.
func TestMeshNeedsClusterName(t *testing.T) {
	snap := recordingSnapshot(t, meshRecording(t))
	_, err := Synthesize(snap, DefaultConfig())
	if !errors.Is(err, ErrClusterMesh) {
		t.Fatalf("Synthesize without a cluster name = %v, want ErrClusterMesh", err)
	}
	for _, want := range []string{"east, west", "--cluster-name"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

// Ensure each cluster's proposals cover its own workloads only, select peers of the other
// cluster by that cluster and local peers by the local cluster, and let every recorded
// connection through at the local end under both settings of policy-default-local-cluster,
// with the same verdict under both (the policies mean the same on Cilium 1.18 and 1.19+).
func TestMeshPerCluster(t *testing.T) {
	path := meshRecording(t)
	events := meshEvents(t, path)
	for _, local := range []string{flowgen.MeshEast, flowgen.MeshWest} {
		t.Run(local, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.ClusterName = local
			res := synthesize(t, recordingSnapshot(t, path), cfg)
			checkGolden(t, "mesh-"+local, renderAll(t, res))
			if res.Cluster != local {
				t.Errorf("Result.Cluster = %q, want %q", res.Cluster, local)
			}
			if len(res.Proposals) == 0 {
				t.Fatal("no proposals")
			}
			for _, p := range res.Proposals {
				if c := p.Workload.Labels.Cluster(); c != local {
					t.Errorf("proposal %s is for a workload of cluster %q, want only %q", p.Name, c, local)
				}
			}
			remoteSkips := 0
			for _, s := range res.Skipped {
				if s.Reason == SkipRemoteCluster {
					remoteSkips++
					if s.Workload.Labels.Cluster() == local {
						t.Errorf("local workload %s skipped as remote", s.Display)
					}
				}
			}
			if remoteSkips == 0 {
				t.Error("no workload of the other cluster was listed as skipped")
			}

			verdicts := map[bool][]policyaudit.Verdict{}
			for _, anyCluster := range []bool{false, true} {
				set := policyaudit.NewPolicySet(policyaudit.Config{ClusterName: local, PolicyAnyCluster: anyCluster})
				for _, p := range res.Proposals {
					if err := set.AddCCNP(p.Policy); err != nil {
						t.Fatalf("AddCCNP(%s): %v", p.Name, err)
					}
				}
				for _, ev := range events {
					if ev.Kind != flows.KindFlow {
						continue
					}
					v, err := set.Evaluate(ev)
					if err != nil {
						t.Fatal(err)
					}
					verdicts[anyCluster] = append(verdicts[anyCluster], v)
					for _, d := range []struct {
						dir  string
						peer flows.Peer
						v    policyaudit.DirectionVerdict
					}{{"egress", ev.Src, v.Egress}, {"ingress", ev.Dst, v.Ingress}} {
						remote := d.peer.Kind == flows.PeerWorkload && d.peer.Labels.Cluster() != local
						switch {
						case remote && d.v.Reason != policyaudit.ReasonRemoteCluster:
							t.Errorf("any-cluster=%t %s -> %s %s: %s at a workload of another cluster, want n/a/remote-cluster",
								anyCluster, ev.Src.String(), ev.Dst.String(), d.dir, d.v)
						case !remote && d.v.Decision == policyaudit.DecisionDenied:
							t.Errorf("any-cluster=%t %s -> %s %s %s: %s, want allowed (the connection was recorded)",
								anyCluster, ev.Src.String(), ev.Dst.String(), ev.PortString(), d.dir, d.v)
						}
					}
				}
			}
			for i := range verdicts[false] {
				if a, b := verdicts[false][i], verdicts[true][i]; a.Egress.Decision != b.Egress.Decision || a.Ingress.Decision != b.Ingress.Decision {
					t.Errorf("event %d: verdict %v with policy-default-local-cluster=true, %v with false; want the same", i, a, b)
				}
			}
		})
	}
}
