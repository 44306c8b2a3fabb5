// Package flood generates a label flood for benchmarks and tests: one flow in two from a
// Deployment that gets a new version label each time (issue 15.6). It is apart from flowgen so
// that flowgen never imports pkg/flows, whose own tests use flowgen.
package flood

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/recommender/recommender/pkg/flows"
)

// FloodStart is the time of the label flood's first event.
var FloodStart = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// LabelFlood is the label flood of issue 15.6: n flows, every other one from Deployment
// shop/flood with a new k8s:version value each time, calling shop/api on 8080/TCP, the rest
// ordinary traffic from 100 clients to 50 servers in namespace bench; after them one flow of a
// new, legitimate workload (shop/late to shop/api on 8443/TCP). It is a flows.Source of events
// already normalized, unlike the other scenarios: the benchmarks it drives (the store's in
// pkg/aggregate, the sync's in pkg/synth) measure the stages after normalization, and share it
// so that their figures describe the same flood.
type LabelFlood struct {
	n, i  int
	bench []flows.Peer // clients, then servers
	api   flows.Peer
}

const floodClients, floodServers = 100, 50

// NewLabelFlood returns the flood of n flows (plus the late workload's one).
func NewLabelFlood(n int) *LabelFlood {
	f := &LabelFlood{n: n, api: floodWorkload("shop", "", "k8s:app=api")}
	for i := range floodClients + floodServers {
		f.bench = append(f.bench, floodWorkload("bench", "", fmt.Sprintf("k8s:app=w%d", i), "k8s:tier=bench"))
	}
	return f
}

func floodWorkload(ns, owner string, labels ...string) flows.Peer {
	return flows.Peer{Kind: flows.PeerWorkload, Namespace: ns, Workload: owner, Labels: flows.NewLabels(labels...)}
}

var floodNodes = []string{"node-0", "node-1", "node-2"}

// Recv implements flows.Source: the flood, the late workload's flow, then io.EOF.
func (f *LabelFlood) Recv(ctx context.Context) (*flows.Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if f.i > f.n {
		return nil, io.EOF
	}
	f.i++
	i := f.i
	ev := &flows.Event{
		Kind: flows.KindFlow, Time: FloodStart.Add(time.Duration(i/1000) * time.Second), Node: floodNodes[i%3], ID: uint64(i),
		Type: flows.EventTrace, Point: flows.DirectionEgress, Proto: flows.ProtoTCP, Port: 8080,
		SrcPort: uint16(32768 + i%28000), Verdict: flows.VerdictForwarded,
	}
	switch {
	case i > f.n:
		ev.Src, ev.Dst, ev.Port = floodWorkload("shop", "Deployment/late", "k8s:app=late"), f.api, 8443
	case i%2 == 1:
		// A multiplicative hash spreads the values as random ones would, deterministically.
		ev.Src = floodWorkload("shop", "Deployment/flood", "k8s:app=flood", fmt.Sprintf("k8s:version=%08x", i*2654435761))
		ev.Dst = f.api
	default:
		pair := i % (floodClients * floodServers)
		ev.Src, ev.Dst = f.bench[pair%floodClients], f.bench[floodClients+pair/floodClients]
	}
	return ev, nil
}
