package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/recommender/recommender/pkg/aggregate"
	"github.com/recommender/recommender/pkg/flows"
)

// ingestOptions are the flags of `recommender ingest`.
type ingestOptions struct {
	src           *sourceOptions
	db            string
	batchSize     int
	batchInterval time.Duration
	lockTimeout   time.Duration
}

func newIngestCmd(g *globalOptions) *cobra.Command {
	o := &ingestOptions{src: newSourceOptions()}
	cmd := &cobra.Command{
		Use:   "ingest (--flows FILE... | --hubble-server ADDR) --db PATH",
		Short: "Fold recorded flows, or everything a relay holds now, into the store, then exit",
		Long: `ingest reads flows once, from 'hubble observe -o jsonpb' recordings or from what Hubble
Relay holds now, folds them into workload edges and commits them to the store in batches.
It resumes from the store's cursor: flows already stored are skipped, so ingesting the
same input twice counts it once. Interrupting it (Ctrl-C) commits what was read.`,
		Args: flowArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.src.files = append(o.src.files, args...)
			o.src.stdin = cmd.InOrStdin()
			return runIngest(cmd.Context(), g, o, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	o.src.addFlags(f)
	f.StringVar(&o.db, "db", "", "store file (created if missing)")
	f.IntVar(&o.batchSize, "batch-size", aggregate.DefaultBatchSize, "flows that make a store commit due (a batch grows up to 4x while the previous commit is written; a crash loses at most that)")
	f.DurationVar(&o.batchInterval, "batch-interval", aggregate.DefaultBatchInterval, "longest time between commits")
	f.DurationVar(&o.lockTimeout, "lock-timeout", aggregate.DefaultLockTimeout, "how long to wait for another process to release the store")
	return cmd
}

func (o *ingestOptions) validate() error {
	if err := o.src.validate(); err != nil {
		return err
	}
	if o.db == "" {
		return errors.New("--db is required")
	}
	if o.batchSize <= 0 || o.batchInterval <= 0 {
		return errors.New("--batch-size and --batch-interval must be positive")
	}
	return nil
}

func runIngest(ctx context.Context, g *globalOptions, o *ingestOptions, stdout, stderr io.Writer) (err error) {
	if err := o.validate(); err != nil {
		return err
	}
	log, err := g.stderrLogger()
	if err != nil {
		return err
	}
	ctx, stop := signalContext(ctx)
	defer stop()

	store, err := aggregate.Open(o.db, aggregate.Options{Timeout: o.lockTimeout, Logger: log})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, store.Close()) }()
	agg, err := aggregate.NewAggregator(aggregate.Config{}, log, nil)
	if err != nil {
		return err
	}
	in, err := aggregate.NewIngester(store, agg, aggregate.IngesterConfig{BatchSize: o.batchSize, BatchInterval: o.batchInterval}, log)
	if err != nil {
		return err
	}

	// The source reads everything (no relay cursor): the Ingester skips what the store holds
	// after the Folder, which must see both observations of a connection to fold them. A
	// cursor given to the relay would drop the first before the Folder, and count the second.
	src, err := o.src.build(ctx, log, nil)
	if err != nil {
		return err
	}
	defer src.Close()
	// Files the store read before are resumed at their marks instead of re-read (issue 15.7).
	if r, ok := src.Source.(interface{ ResumeFrom([]flows.FileMark) }); ok {
		r.ResumeFrom(in.FileMarks())
	}

	stopProgress := startProgress(stderr, in)
	err = in.Run(ctx, src.Source) // the Folder itself: Run asks it for file positions
	stopProgress()
	if err != nil {
		return err
	}
	st := in.Stats()
	w, e := agg.Len()
	sum := src.stats.Snapshot()
	fmt.Fprintf(stdout, "ingested %d flows in %s (%.0f flows/s); skipped %d already stored, %d by the source (%s), %d malformed\n",
		st.Events, st.Elapsed.Round(time.Millisecond), st.Rate(), st.Skipped, sum.Skipped, sum.SkipText(), sum.Malformed)
	src.printUnresolved(stdout)
	fmt.Fprintf(stdout, "store %s: %d workloads, %d edges\n", o.db, w, e)
	return nil
}

// startProgress reports the ingest rate on stderr until the returned function is called: a
// line rewritten in place every second on a terminal, a plain line every ten seconds otherwise
// (logs of a CI job).
func startProgress(w io.Writer, in *aggregate.Ingester) (stop func()) {
	tty := false
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	every := 10 * time.Second
	if tty {
		every = time.Second
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				if tty {
					fmt.Fprint(w, "\r\033[K")
				}
				return
			case <-t.C:
				st := in.Stats()
				line := fmt.Sprintf("ingesting: %d flows, %.0f flows/s, %d commits", st.Events, st.Rate(), st.Commits)
				if tty {
					fmt.Fprint(w, "\r\033[K"+line)
				} else {
					fmt.Fprintln(w, line)
				}
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
	}
}
