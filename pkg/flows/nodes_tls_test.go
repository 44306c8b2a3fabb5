package flows_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/recommender/recommender/pkg/flows"
	"github.com/recommender/recommender/pkg/replay"
)

// testCA is a certificate authority issuing certificates as Cilium's Hubble CA does: one
// per node named <node>.<cluster>.hubble-grpc.cilium.io, one for the Peer service.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	// file holds the CA certificate in PEM (--tls-ca-cert-files).
	file string
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "hubble-ca.cilium.io"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, file: file}
}

// server returns a TLS server configuration with a certificate for name.
func (ca *testCA) server(t *testing.T, name string) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

// Ensure that with TLS the Peer service is verified against its Hubble name and each node
// against the server name its announcement carries, as Relay does: a node whose certificate
// does not carry the announced name is not read, the others are.
func TestNodesSourceTLS(t *testing.T) {
	nodes := startNodes(t)
	ca := newTestCA(t)
	const cluster = "default"
	name := func(n string) string { return n + "." + cluster + ".hubble-grpc.cilium.io" }
	ps := replay.NewPeerServer()
	peerAddr, err := ps.StartTLS("127.0.0.1:0", ca.server(t, flows.PeerTLSServerName(cluster)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ps.Stop)
	good, bad := nodes[0], nodes[1]
	// The good node serves a certificate for its announced name; the bad one for another.
	goodAddr := serveTLS(t, good, ca.server(t, name(good.name)))
	badAddr := serveTLS(t, bad, ca.server(t, name("someone-else")))
	ps.Add(replay.Peer{Name: good.name, Address: goodAddr, TLSServerName: name(good.name)})
	ps.Add(replay.Peer{Name: bad.name, Address: badAddr, TLSServerName: name(bad.name)})

	src := newNodes(t, flows.NodesConfig{Peers: "tls://" + peerAddr, Relay: flows.RelayConfig{
		TLSCACertFiles: []string{ca.file}, TLSServerName: flows.PeerTLSServerName(cluster),
	}})
	sameSet(t, readN(t, t.Context(), src, len(good.want)), wantOf(good))
	for _, n := range src.Nodes() {
		switch n.Name {
		case good.name:
			if n.TLSServerName != name(good.name) || !n.Relay.Connected {
				t.Errorf("node %s: server name %q, connected %v; want %q, connected", n.Name, n.TLSServerName, n.Relay.Connected, name(good.name))
			}
		case bad.name:
			if n.Stats.Events != 0 {
				t.Errorf("node %s with a certificate for another name delivered %d events", n.Name, n.Stats.Events)
			}
		}
	}
}

// serveTLS serves n's records again, over TLS with tc.
func serveTLS(t *testing.T, n *testNode, tc *tls.Config) string {
	t.Helper()
	rec, err := replay.NewRecording(n.recs)
	if err != nil {
		t.Fatal(err)
	}
	_, addr := serve(t, rec, replay.Options{Follow: true, TLS: tc}, "127.0.0.1:0")
	return addr
}
