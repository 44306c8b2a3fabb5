package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/recommender/recommender/pkg/flows"
)

// Flags of the flow source, shared by every command that reads flows. Relay flags keep the
// hubble CLI's names, prefixed where the daemon talks to several servers.
const (
	flagHubbleServer      = "hubble-server"
	flagTLS               = "tls"
	flagTLSAllowInsecure  = "tls-allow-insecure"
	flagTLSCACertFiles    = "tls-ca-cert-files"
	flagTLSClientCertFile = "tls-client-cert-file"
	flagTLSClientKeyFile  = "tls-client-key-file"
	flagTLSServerName     = "tls-server-name"
	flagTimeout           = "timeout"
	flagFlows             = "flows"
	flagStrict            = "strict"
	flagLabelExclude      = "label-exclude"
	flagLabelInclude      = "label-include"
	flagNamespace         = "namespace"
	flagNodeName          = "node-name"
	flagHubblePeers       = "hubble-peers"
)

// sourceOptions is the flow source a command reads: recorded files (--flows) or Hubble
// Relay (--hubble-server, the default). Commands add its flags, validate, then build.
type sourceOptions struct {
	relay flows.RelayConfig
	// peers, when set (--hubble-peers, run only), reads every node's Hubble server found
	// through this Peer service instead of Hubble Relay.
	peers        string
	files        []string
	strict       bool
	labelExclude []string
	labelInclude []string

	// follow is set by the command (a --follow flag, or always for the daemon): keep the
	// relay stream open for new flows.
	follow bool
	// stdin is what "--flows -" reads (the command's input).
	stdin io.Reader
	// pods, set by a command connected to the cluster, names pods that flows carry without
	// labels (a field-masked export, a pod the proxy saw as world).
	pods flows.PodResolver
	// assign and start, set by the daemon for --hubble-peers, split the nodes among replicas
	// and start a node new to this replica where the others stopped (flows.NodesConfig).
	assign flows.Assignment
	start  func(node string) *flows.Cursor
	// peerCluster names the cluster in the Peer service's default TLS server name.
	peerCluster string

	fs *pflag.FlagSet
}

func newSourceOptions() *sourceOptions {
	return &sourceOptions{relay: flows.DefaultRelayConfig()}
}

// addFlags adds the source flags to fs.
func (o *sourceOptions) addFlags(fs *pflag.FlagSet) {
	o.fs = fs
	fs.StringVar(&o.relay.Server, flagHubbleServer, o.relay.Server, `Hubble Relay address (host:port); a "tls://" prefix implies --tls`)
	fs.BoolVar(&o.relay.TLS, flagTLS, false, "use TLS to connect to Hubble Relay")
	fs.BoolVar(&o.relay.TLSAllowInsecure, flagTLSAllowInsecure, false, "accept any Hubble Relay certificate (no verification)")
	fs.StringSliceVar(&o.relay.TLSCACertFiles, flagTLSCACertFiles, nil, "CA certificates (PEM) that verify Hubble Relay; default: the system pool")
	fs.StringVar(&o.relay.TLSClientCertFile, flagTLSClientCertFile, "", "client certificate (PEM) for mTLS to Hubble Relay")
	fs.StringVar(&o.relay.TLSClientKeyFile, flagTLSClientKeyFile, "", "client key (PEM) for mTLS to Hubble Relay")
	fs.StringVar(&o.relay.TLSServerName, flagTLSServerName, "", "server name to verify in the Hubble Relay certificate")
	fs.DurationVar(&o.relay.DialTimeout, flagTimeout, o.relay.DialTimeout, "timeout for connecting to Hubble Relay and opening a stream")
	fs.StringSliceVar(&o.files, flagFlows, nil, "read recorded flows (hubble observe -o jsonpb; plain or gzip; a directory; - for stdin) instead of Hubble Relay")
	fs.BoolVar(&o.strict, flagStrict, false, "with --flows: fail on the first malformed line instead of skipping and counting it")
	fs.StringSliceVar(&o.labelExclude, flagLabelExclude, nil, "regular expressions over label keys to drop from workload identities, in addition to the defaults")
	fs.StringSliceVar(&o.labelInclude, flagLabelInclude, nil, "regular expressions over label keys to keep even when excluded")
	fs.StringSliceVar(&o.relay.Namespaces, flagNamespace, nil, "shard: only flows from or to pods of these namespaces (filtered by Hubble Relay); with --policy-kind CiliumNetworkPolicy, run also reads and applies in these namespaces only, with namespaced rights (deploy/namespaced)")
	fs.StringSliceVar(&o.relay.Nodes, flagNodeName, nil, "shard: only flows observed on these nodes (filtered by Hubble Relay)")
}

// addPeerFlags adds --hubble-peers (the daemon only: the node streams never end).
func (o *sourceOptions) addPeerFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.peers, flagHubblePeers, "", `read every node's Hubble server directly, finding the nodes through Hubble's Peer service at this address (host:port, "tls://" implies --tls, or unix:///var/run/cilium/hubble.sock), instead of Hubble Relay; the TLS flags apply to the Peer service and the nodes, --tls-server-name is the Peer service's (default with TLS: hubble-peer.<cluster>.hubble-grpc.cilium.io)`)
}

// fromPeers reports whether the source is every node's Hubble server (--hubble-peers).
func (o *sourceOptions) fromPeers() bool { return o.peers != "" }

// flowArgs accepts arguments as more recordings when --flows was given: a shell glob after
// --flows (--flows testdata/flows/*.jsonl) expands to several words, and the words after the
// first are recordings too, not stray arguments. Every command taking --flows uses it and
// appends args to its files.
func flowArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 && !cmd.Flags().Changed(flagFlows) {
		return fmt.Errorf("unexpected arguments %q: recordings go after --%s", args, flagFlows)
	}
	return nil
}

// fromRelay reports whether the source is Hubble Relay rather than files.
// (Reading the nodes counts as a relay: a live source over the same TLS flags.)
func (o *sourceOptions) fromRelay() bool { return len(o.files) == 0 }

// validate checks the flags before anything is opened.
func (o *sourceOptions) validate() error {
	if !o.fromRelay() {
		if o.fromPeers() {
			return fmt.Errorf("--%s and --%s exclude each other: read the nodes or files", flagFlows, flagHubblePeers)
		}
		if o.fs != nil {
			for _, f := range []string{flagHubbleServer, flagTLS, flagTLSAllowInsecure, flagTLSCACertFiles, flagTLSClientCertFile, flagTLSClientKeyFile, flagTLSServerName, flagTimeout, flagNamespace, flagNodeName} {
				if o.fs.Changed(f) {
					return fmt.Errorf("--%s and --%s exclude each other: read from Hubble Relay or from files", flagFlows, f)
				}
			}
		}
		cfg := flows.FileConfig{Paths: o.files, Strict: o.strict}
		return cfg.Validate()
	}
	if o.strict {
		return fmt.Errorf("--%s applies to --%s only", flagStrict, flagFlows)
	}
	if o.fromPeers() {
		if o.fs != nil && o.fs.Changed(flagHubbleServer) {
			return fmt.Errorf("--%s and --%s exclude each other: read Hubble Relay or the nodes", flagHubbleServer, flagHubblePeers)
		}
		if len(o.relay.Nodes) > 0 {
			return fmt.Errorf("--%s shards a relay stream; with --%s the replicas split the nodes (--replicas)", flagNodeName, flagHubblePeers)
		}
		cfg := o.nodesConfig()
		if err := cfg.Validate(); err != nil {
			return fmt.Errorf("--%s: %w", flagHubblePeers, err)
		}
		return nil
	}
	if err := o.relay.Validate(); err != nil {
		return fmt.Errorf("--%s: %w", flagHubbleServer, err)
	}
	return nil
}

// nodesConfig is the node source's configuration from the flags.
func (o *sourceOptions) nodesConfig() flows.NodesConfig {
	cfg := flows.NodesConfig{Peers: o.peers, Relay: o.relay, Assignment: o.assign, Start: o.start}
	cfg.Relay.Server = ""
	tlsOn := cfg.Relay.TLS || strings.HasPrefix(o.peers, "tls://")
	if tlsOn && cfg.Relay.TLSServerName == "" && !strings.HasPrefix(o.peers, "unix://") {
		// The certificate of the Peer service carries this name, not the Service's DNS name;
		// Hubble Relay checks the same.
		cfg.Relay.TLSServerName = flows.PeerTLSServerName(o.peerCluster)
	}
	return cfg
}

// builtSource is a ready flow source: both-end observations folded into one (flows.Folder),
// counted in stats.
type builtSource struct {
	flows.Source
	// stats counts what the source read; folded duplicates count as skipped.
	stats *flows.Stats
	// live is the relay or node source (state and metrics), nil when reading files.
	live liveSource
	// nodes is the node source (--hubble-peers), nil otherwise.
	nodes *flows.NodesSource
	// norm names the pods whose flows were skipped for want of labels.
	norm  *flows.Normalizer
	close func() error
}

// liveSource is what the daemon reads from a relay or node source.
type liveSource interface {
	State() flows.RelayState
	RegisterMetrics(reg prometheus.Registerer)
}

// printUnresolved lists, per pod, the flows skipped because no selector could be written for
// an end (flows.SkipNoIdentity): the user has to fix the capture or connect to the cluster.
func (b *builtSource) printUnresolved(w io.Writer) {
	pods := b.norm.Unresolved()
	if len(pods) == 0 {
		return
	}
	fmt.Fprintf(w, "no selector written for %d workloads known only by pod name (their flows are skipped as %s):\n", len(pods), flows.SkipNoIdentity)
	for _, p := range pods {
		fmt.Fprintf(w, "  %s\n", p)
	}
}

// Close releases files or the relay connection.
func (b *builtSource) Close() error { return b.close() }

// build opens the source. cursor (may be nil) resumes a relay read where a previous run
// stopped; files are always read whole. ctx is the command's root context: when it ends, a
// read of stdin ends too.
func (o *sourceOptions) build(ctx context.Context, log *slog.Logger, cursor *flows.Cursor) (*builtSource, error) {
	lf, err := flows.NewLabelFilter(o.labelExclude, o.labelInclude)
	if err != nil {
		return nil, fmt.Errorf("--%s/--%s: %w", flagLabelExclude, flagLabelInclude, err)
	}
	norm := flows.NewNormalizer(lf)
	if o.pods != nil {
		norm.WithResolver(o.pods)
	}
	if !o.fromRelay() {
		fsrc, err := flows.NewFileSource(flows.FileConfig{Paths: o.files, Strict: o.strict, Stdin: newCtxReader(ctx, o.stdin)}, norm, log)
		if err != nil {
			return nil, err
		}
		return &builtSource{Source: flows.NewFolder(fsrc, fsrc.Stats()), stats: fsrc.Stats(), norm: norm, close: fsrc.Close}, nil
	}
	if o.fromPeers() {
		nsrc, err := flows.NewNodesSource(o.nodesConfig(), norm, log)
		if err != nil {
			return nil, err
		}
		// Folded per node inside (flows.NodesSource): folding the merge again would make
		// the counts depend on arrival order.
		return &builtSource{Source: nsrc, stats: nsrc.Stats(), live: nsrc, nodes: nsrc, norm: norm, close: nsrc.Close}, nil
	}
	cfg := o.relay
	cfg.Follow = o.follow
	cfg.Cursor = cursor
	if cfg.Follow {
		cfg.Retries = 0
	}
	rsrc, err := flows.NewRelaySource(cfg, norm, log)
	if err != nil {
		return nil, err
	}
	return &builtSource{Source: flows.NewFolder(rsrc, rsrc.Stats()), stats: rsrc.Stats(), live: rsrc, norm: norm, close: rsrc.Close}, nil
}

// readEach is the one read loop of the commands that consume events themselves (flows,
// check): it calls fn with every event of src and returns nil at the source's end, ctx's
// error when ctx ended first, and otherwise the first error of src or fn.
func readEach(ctx context.Context, src flows.Source, fn func(*flows.Event) error) error {
	for {
		ev, err := src.Recv(ctx)
		switch {
		case errors.Is(err, io.EOF):
			return nil
		case err != nil && ctx.Err() != nil:
			return ctx.Err()
		case err != nil:
			return fmt.Errorf("read flows: %w", err)
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
}

// ctxReader reads r in a goroutine of its own so that a Read ends when ctx does: a read of a
// quiet pipe (sleep 30 | recommender ingest --flows -) blocks in the kernel, where SIGTERM
// cannot reach it. The goroutine stays blocked in that read until r delivers or the process
// exits; it is started on the first Read, so a command that never reads stdin starts none.
type ctxReader struct {
	ctx  context.Context
	r    io.Reader
	once sync.Once
	// data carries what the goroutine read; it is closed after err is set.
	data chan []byte
	err  error
	// rest is what the last chunk holds beyond what Read has returned.
	rest []byte
}

func newCtxReader(ctx context.Context, r io.Reader) io.Reader {
	if r == nil {
		return nil // flows.FileSource reads os.Stdin then; commands always set stdin
	}
	return &ctxReader{ctx: ctx, r: r, data: make(chan []byte)}
}

func (c *ctxReader) Read(p []byte) (int, error) {
	c.once.Do(func() { go c.pump() })
	if len(c.rest) == 0 {
		select {
		case <-c.ctx.Done():
			return 0, c.ctx.Err()
		case b, ok := <-c.data:
			if !ok {
				return 0, c.err
			}
			c.rest = b
		}
	}
	n := copy(p, c.rest)
	c.rest = c.rest[n:]
	return n, nil
}

func (c *ctxReader) pump() {
	for {
		buf := make([]byte, 64<<10)
		n, err := c.r.Read(buf)
		if n > 0 {
			select {
			case c.data <- buf[:n]:
			case <-c.ctx.Done():
				return
			}
		}
		if err != nil {
			c.err = err
			close(c.data)
			return
		}
	}
}
