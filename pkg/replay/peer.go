package replay

import (
	"context"
	"crypto/tls"
	"fmt"
	"maps"
	"slices"
	"sync"

	peerpb "github.com/cilium/cilium/api/v1/peer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// Peer is one node as Hubble's Peer service announces it.
type Peer struct {
	// Name is the node name (with the cluster's name and a slash first outside the default
	// cluster, as Cilium sends it).
	Name string
	// Address is host:port of the node's Hubble server.
	Address string
	// TLSServerName, when set, announces a TLS server with that certificate name (the
	// notification's tls field); empty announces plain gRPC.
	TLSServerName string
}

func (p Peer) notification(t peerpb.ChangeNotificationType) *peerpb.ChangeNotification {
	cn := &peerpb.ChangeNotification{Name: p.Name, Address: p.Address, Type: t}
	if p.TLSServerName != "" {
		cn.Tls = &peerpb.TLS{ServerName: p.TLSServerName}
	}
	return cn
}

// PeerServer stands in for Hubble's Peer service (observer.Peer/Notify, the API Hubble Relay
// discovers nodes with): a Notify stream first gets every known peer as PEER_ADDED, as
// Cilium's handler sends them, then each change as it is made. Tests add, update and
// delete peers while clients are connected. Safe for concurrent use.
type PeerServer struct {
	peerpb.UnimplementedPeerServer

	srv restartable
	// mu guards peers and subs.
	mu    sync.Mutex
	peers map[string]Peer
	// subs are the open Notify streams' queues; a change is appended to each.
	subs map[*peerSub]struct{}
}

// peerSub is one Notify stream's queue of notifications not yet sent. It is unbounded: the
// stand-in serves tests and demos with a handful of peers, and a change must never block
// the test that makes it.
type peerSub struct {
	mu      sync.Mutex
	pending []*peerpb.ChangeNotification
	wake    chan struct{}
}

func (s *peerSub) push(cn *peerpb.ChangeNotification) {
	s.mu.Lock()
	s.pending = append(s.pending, cn)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *peerSub) take() []*peerpb.ChangeNotification {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.pending
	s.pending = nil
	return out
}

// NewPeerServer returns a Peer service announcing peers.
func NewPeerServer(peers ...Peer) *PeerServer {
	s := &PeerServer{peers: make(map[string]Peer), subs: make(map[*peerSub]struct{})}
	for _, p := range peers {
		s.peers[p.Name] = p
	}
	return s
}

// Start listens on addr ("127.0.0.1:0" for any free port) and serves in the background; it
// returns the bound address.
func (s *PeerServer) Start(addr string) (string, error) { return s.StartTLS(addr, nil) }

// StartTLS is Start serving TLS with tc (nil: plain gRPC), as the agents' Peer service
// behind the hubble-peer Service does.
func (s *PeerServer) StartTLS(addr string, tc *tls.Config) (string, error) {
	var opts []grpc.ServerOption
	if tc != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(tc)))
	}
	gs := grpc.NewServer(opts...)
	peerpb.RegisterPeerServer(gs, s)
	addr, err := s.srv.listen(addr, gs)
	if err != nil {
		return "", fmt.Errorf("peer server: %w", err)
	}
	return addr, nil
}

// Stop closes the listener and every Notify stream (clients see Unavailable, as when the
// agent restarts). The server may be started again; its peers stay.
func (s *PeerServer) Stop() { s.srv.stop() }

// Add announces a new peer, or an updated one (PEER_UPDATED) when the name is known.
func (s *PeerServer) Add(p Peer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := peerpb.ChangeNotificationType_PEER_ADDED
	if _, ok := s.peers[p.Name]; ok {
		t = peerpb.ChangeNotificationType_PEER_UPDATED
	}
	s.peers[p.Name] = p
	s.broadcast(p.notification(t))
}

// Delete announces that the named peer left (PEER_DELETED); unknown names are ignored.
func (s *PeerServer) Delete(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.peers[name]
	if !ok {
		return
	}
	delete(s.peers, name)
	s.broadcast(p.notification(peerpb.ChangeNotificationType_PEER_DELETED))
}

// broadcast queues cn on every open stream; s.mu is held.
func (s *PeerServer) broadcast(cn *peerpb.ChangeNotification) {
	for sub := range s.subs {
		sub.push(cn)
	}
}

// Notify implements the Peer service: the known peers, then every change until the client
// leaves or the server stops.
func (s *PeerServer) Notify(_ *peerpb.NotifyRequest, stream grpc.ServerStreamingServer[peerpb.ChangeNotification]) error {
	sub := &peerSub{wake: make(chan struct{}, 1)}
	s.mu.Lock()
	for _, name := range slices.Sorted(maps.Keys(s.peers)) {
		sub.pending = append(sub.pending, s.peers[name].notification(peerpb.ChangeNotificationType_PEER_ADDED))
	}
	s.subs[sub] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.subs, sub)
		s.mu.Unlock()
	}()
	ctx := stream.Context()
	for {
		for _, cn := range sub.take() {
			if err := stream.Send(cn); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-sub.wake:
		}
	}
}
