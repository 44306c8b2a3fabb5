package replay

import (
	"context"
	"errors"
	"fmt"
	"io"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/grpc"
)

// Drain is the reference consumer: it opens GetFlows with req on conn and only receives and
// decodes responses, until the stream ends or limit responses arrived (0: no limit). It
// returns the number of responses received. Benchmarks put the ingest pipeline's rate next
// to Drain's, the most any consumer of the same stream can reach.
func Drain(ctx context.Context, conn grpc.ClientConnInterface, req *observerpb.GetFlowsRequest, limit uint64) (uint64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := observerpb.NewObserverClient(conn).GetFlows(ctx, req)
	if err != nil {
		return 0, fmt.Errorf("get flows: %w", err)
	}
	var n uint64
	for limit == 0 || n < limit {
		if _, err := stream.Recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return n, nil
			}
			return n, fmt.Errorf("receive flow %d: %w", n+1, err)
		}
		n++
	}
	return n, nil
}
