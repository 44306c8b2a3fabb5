package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

// Version is stamped at build time: -ldflags "-X main.Version=v1.2.3".
var Version = "dev"

// globalOptions are the flags every command shares.
type globalOptions struct {
	logLevel  string
	logFormat string
}

func newRootCmd() *cobra.Command {
	opts := &globalOptions{}
	root := &cobra.Command{
		Use:   "recommender",
		Short: "Learn least-privilege Cilium network policy from Hubble flows",
		Long: `recommender watches what a Cilium cluster really does (Hubble flows, live from Hubble
Relay or recorded with 'hubble observe -o jsonpb'), folds it into workload edges, and
writes least-privilege CiliumClusterwideNetworkPolicies that are audited against live
traffic before they are enforced.`,
		Version:       Version,
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.PersistentFlags().StringVar(&opts.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	root.PersistentFlags().StringVar(&opts.logFormat, "log-format", "text", "log format: text or json")
	root.AddCommand(
		// One constructor per file, in the order of the pipeline.
		newRelayCmd(opts),
		newFlowsCmd(opts),
		newIngestCmd(opts),
		newStatusCmd(opts),
		newCompactCmd(opts),
		newRecommendCmd(opts),
		newDiffCmd(opts),
		newCheckCmd(opts),
		newRunCmd(opts),
	)
	return root
}

// logger builds the command's logger on stderr from the global flags.
func (o *globalOptions) logger(w io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(o.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", o.logLevel)
	}
	hopts := &slog.HandlerOptions{Level: lvl}
	switch strings.ToLower(o.logFormat) {
	case "text":
		return slog.New(slog.NewTextHandler(w, hopts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, hopts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", o.logFormat)
}

// stderrLogger is the usual call: the logger on os.Stderr.
func (o *globalOptions) stderrLogger() (*slog.Logger, error) { return o.logger(os.Stderr) }

// signalContext is the one root context of a command: SIGINT and SIGTERM cancel it, and the
// stages below shut down in order (packages never handle signals themselves).
func signalContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
}
