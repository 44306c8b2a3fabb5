package main

import (
	"fmt"
	"net"

	"github.com/recommender/recommender/pkg/replay"
	"github.com/spf13/cobra"
)

const (
	flagListen = "listen"
	flagRate   = "rate"
	flagLoop   = "loop"
	// flagKeepOpen is relay's own: --follow (flows) means "keep reading new flows", which a
	// server does not do; this keeps its clients' follow streams open at the recording's end.
	flagKeepOpen = "keep-open"
)

type relayOptions struct {
	files  []string
	strict bool
	listen string
	replay replay.Options
}

func newRelayCmd(g *globalOptions) *cobra.Command {
	o := &relayOptions{}
	cmd := &cobra.Command{
		Use:   "relay --flows FILE... [--listen ADDR] [--rate N] [--loop] [--keep-open]",
		Short: "Serve recorded flows over the Hubble Relay (Observer) gRPC API",
		Long: `relay is a Hubble Relay stand-in: it serves recorded flows (hubble observe -o jsonpb)
over the real Observer gRPC API, so 'hubble observe --server ADDR' and 'recommender
--hubble-server ADDR' read them as from a cluster. GetFlows honors number, first, follow,
since, until and the common allow/deny filters; ServerStatus and GetNodes describe the
recording.`,
		Args: flowArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.files = append(o.files, args...)
			if len(o.files) == 0 {
				return fmt.Errorf("--%s is required", flagFlows)
			}
			if err := o.replay.Validate(); err != nil {
				return fmt.Errorf("--%s: %w", flagRate, err)
			}
			log, err := g.stderrLogger()
			if err != nil {
				return err
			}
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			rec, sum, err := replay.Load(ctx, o.files, o.strict, log)
			if err != nil {
				return err
			}
			if sum.Malformed > 0 {
				log.Warn("skipped malformed flow records", "count", sum.Malformed)
			}
			srv, err := replay.New(rec, o.replay, log)
			if err != nil {
				return err
			}
			var lc net.ListenConfig
			lis, err := lc.Listen(ctx, "tcp", o.listen)
			if err != nil {
				return fmt.Errorf("--%s: %w", flagListen, err)
			}
			return srv.Serve(ctx, lis)
		},
	}
	fs := cmd.Flags()
	fs.StringSliceVar(&o.files, flagFlows, nil, "recorded flows to serve (hubble observe -o jsonpb; plain or gzip; a directory; - for stdin)")
	fs.BoolVar(&o.strict, flagStrict, false, "fail on the first malformed line instead of skipping it")
	fs.StringVar(&o.listen, flagListen, "127.0.0.1:4245", "address to serve the Observer API on")
	fs.Float64Var(&o.replay.Rate, flagRate, 0, "release flows at this many per second, like live traffic (0: all at once, as fast as clients read)")
	fs.BoolVar(&o.replay.Loop, flagLoop, false, "replay forever, shifting each pass forward in time")
	fs.BoolVar(&o.replay.Follow, flagKeepOpen, false, "keep follow streams open after the recording ends instead of ending them")
	return cmd
}
