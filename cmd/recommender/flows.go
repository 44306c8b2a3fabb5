package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/recommender/recommender/pkg/flows"
	"github.com/spf13/cobra"
)

const (
	flagOutput = "output"
	flagFollow = "follow"
)

// The one -o vocabulary of every command that prints a report.
const (
	outputTable = "table"
	outputJSON  = "json"
)

// validateOutput checks an -o value.
func validateOutput(format string) error {
	if format != outputTable && format != outputJSON {
		return fmt.Errorf("-o/--%s %q: want %s or %s", flagOutput, format, outputTable, outputJSON)
	}
	return nil
}

type flowsOptions struct {
	src    *sourceOptions
	output string
}

func newFlowsCmd(g *globalOptions) *cobra.Command {
	o := &flowsOptions{src: newSourceOptions()}
	cmd := &cobra.Command{
		Use:   "flows [--hubble-server ADDR | --flows FILE...] [--follow] [-o table|json]",
		Short: "Print normalized flow events from Hubble Relay or recorded files",
		Long: `flows reads a flow source and prints the events every later stage sees: client and
server decided, replies skipped, both-end observations folded, labels reduced to the stable
set. Without --follow it reads what the source holds now and exits (like 'hubble observe
--all'), so a recording and a relay serving it print the same events. A summary goes to
stderr: events, records skipped by reason (README, Troubleshooting), malformed records with
the first places (file:line), lost events, and the workloads whose pods the flows name
without labels (no selector is guessed for them).`,
		Args: flowArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.src.files = append(o.src.files, args...)
			if err := validateOutput(o.output); err != nil {
				return err
			}
			if err := o.src.validate(); err != nil {
				return err
			}
			if o.src.follow && !o.src.fromRelay() {
				return fmt.Errorf("--%s applies to --%s only: a recording has an end", flagFollow, flagHubbleServer)
			}
			log, err := g.stderrLogger()
			if err != nil {
				return err
			}
			o.src.stdin = cmd.InOrStdin()
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			src, err := o.src.build(ctx, log, nil)
			if err != nil {
				return err
			}
			defer src.Close()

			p := newEventPrinter(cmd.OutOrStdout(), o.output)
			var runErr error
			var printed uint64
			for {
				ev, err := src.Recv(ctx)
				if errors.Is(err, io.EOF) || (err != nil && ctx.Err() != nil) {
					break
				}
				if err != nil {
					runErr = err
					break
				}
				if err := p.print(ev); err != nil {
					runErr = fmt.Errorf("write output: %w", err)
					break
				}
				printed++
			}
			// Events are counted here: the source's own count includes observations the
			// folder then drops (and counts as skipped).
			s := src.stats.Snapshot()
			s.Events = printed
			fmt.Fprintln(cmd.ErrOrStderr(), s)
			src.printUnresolved(cmd.ErrOrStderr())
			return errors.Join(runErr, p.flush())
		},
	}
	o.src.addFlags(cmd.Flags())
	cmd.Flags().BoolVarP(&o.src.follow, flagFollow, "f", false, "keep streaming new flows from Hubble Relay")
	cmd.Flags().StringVarP(&o.output, flagOutput, "o", "table", "output format: table or json (one object per event per line)")
	return cmd
}

// eventPrinter writes events as a table or as JSON lines.
type eventPrinter struct {
	json bool
	enc  *json.Encoder
	tw   *tabwriter.Writer
	rows int
}

func newEventPrinter(w io.Writer, format string) *eventPrinter {
	if format == "json" {
		return &eventPrinter{json: true, enc: json.NewEncoder(w)}
	}
	return &eventPrinter{tw: tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)}
}

func (p *eventPrinter) print(ev *flows.Event) error {
	if p.json {
		return p.enc.Encode(toJSONEvent(ev))
	}
	if p.rows == 0 {
		fmt.Fprintln(p.tw, "TIME\tNODE\tTYPE\tVERDICT\tSOURCE\tDESTINATION\tPORT\tL7\tPOINT")
	}
	p.rows++
	t := ev.Time.UTC().Format("2006-01-02T15:04:05.000Z")
	if ev.Kind == flows.KindLost {
		_, err := fmt.Fprintf(p.tw, "%s\t%s\tlost\t%d events\t%s\t\t\t\t\n", t, ev.Node, ev.Lost.Count, ev.Lost.Source)
		return err
	}
	verdict := ev.Verdict.String()
	if ev.DropReason != "" {
		verdict += " (" + ev.DropReason + ")"
	}
	_, err := fmt.Fprintf(p.tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t, ev.Node, ev.Type, verdict,
		ev.Src.String(), ev.Dst.String(), ev.PortString(), l7Summary(ev.L7), ev.Point)
	return err
}

// flush writes out the table (tabwriter buffers to align columns).
func (p *eventPrinter) flush() error {
	if p.tw != nil {
		return p.tw.Flush()
	}
	return nil
}

func l7Summary(l *flows.L7) string {
	switch {
	case l == nil:
		return ""
	case l.DNS != nil:
		s := "dns " + l.DNS.Query
		if l.DNS.Response {
			s += " rcode=" + strconv.Itoa(int(l.DNS.Rcode))
			if len(l.DNS.IPs) > 0 {
				s += " " + strings.Join(l.DNS.IPs, ",")
			}
		}
		return s
	case l.HTTP != nil:
		s := "http " + l.HTTP.Method + " " + l.HTTP.Host + l.HTTP.Path
		if l.HTTP.Code != 0 {
			s += " " + strconv.Itoa(int(l.HTTP.Code))
		}
		return s
	}
	return ""
}

// jsonEvent is the -o json form of a flows.Event. Field names are part of the CLI's
// interface: add fields, never rename them.
type jsonEvent struct {
	Kind       string    `json:"kind"`
	Time       time.Time `json:"time"`
	Node       string    `json:"node"`
	ID         string    `json:"id"`
	Type       string    `json:"type,omitempty"`
	Point      string    `json:"point,omitempty"`
	Src        *jsonPeer `json:"src,omitempty"`
	Dst        *jsonPeer `json:"dst,omitempty"`
	Proto      string    `json:"proto,omitempty"`
	Port       uint16    `json:"port,omitempty"`
	Verdict    string    `json:"verdict,omitempty"`
	DropReason string    `json:"drop_reason,omitempty"`
	L7         *jsonL7   `json:"l7,omitempty"`
	// Connection: an L7 request that stands for its connection (no L3/L4 record of it).
	Connection bool      `json:"connection,omitempty"`
	AllowedBy  []string  `json:"allowed_by,omitempty"`
	DeniedBy   []string  `json:"denied_by,omitempty"`
	Lost       *jsonLost `json:"lost,omitempty"`
}

type jsonPeer struct {
	Kind      string   `json:"kind"`
	Key       string   `json:"key"`
	Namespace string   `json:"namespace,omitempty"`
	Labels    []string `json:"labels,omitempty"`
	Entity    string   `json:"entity,omitempty"`
	IP        string   `json:"ip,omitempty"`
	Names     []string `json:"names,omitempty"`
	Workload  string   `json:"workload,omitempty"`
	Identity  uint32   `json:"identity,omitempty"`
}

type jsonL7 struct {
	DNS  *jsonDNS  `json:"dns,omitempty"`
	HTTP *jsonHTTP `json:"http,omitempty"`
}

type jsonDNS struct {
	Query    string   `json:"query"`
	Rcode    uint32   `json:"rcode"`
	IPs      []string `json:"ips,omitempty"`
	Response bool     `json:"response"`
}

type jsonHTTP struct {
	Method string `json:"method"`
	Host   string `json:"host,omitempty"`
	Path   string `json:"path"`
	Code   uint32 `json:"code,omitempty"`
}

type jsonLost struct {
	Source string `json:"source"`
	Count  uint64 `json:"count"`
}

func toJSONEvent(ev *flows.Event) jsonEvent {
	j := jsonEvent{Time: ev.Time.UTC(), Node: ev.Node, ID: strconv.FormatUint(ev.ID, 16)}
	if ev.Kind == flows.KindLost {
		j.Kind = "lost"
		if ev.Lost != nil {
			j.Lost = &jsonLost{Source: ev.Lost.Source, Count: ev.Lost.Count}
		}
		return j
	}
	j.Kind = "flow"
	j.Type, j.Point = ev.Type.String(), ev.Point.String()
	j.Src, j.Dst = toJSONPeer(&ev.Src), toJSONPeer(&ev.Dst)
	j.Proto, j.Port = ev.Proto.String(), ev.Port
	j.Verdict, j.DropReason = ev.Verdict.String(), ev.DropReason
	j.Connection = ev.Connection
	if ev.L7 != nil {
		j.L7 = &jsonL7{}
		if d := ev.L7.DNS; d != nil {
			j.L7.DNS = &jsonDNS{Query: d.Query, Rcode: d.Rcode, IPs: d.IPs, Response: d.Response}
		}
		if h := ev.L7.HTTP; h != nil {
			j.L7.HTTP = &jsonHTTP{Method: h.Method, Host: h.Host, Path: h.Path, Code: h.Code}
		}
	}
	for _, p := range ev.AllowedBy {
		j.AllowedBy = append(j.AllowedBy, p.String())
	}
	for _, p := range ev.DeniedBy {
		j.DeniedBy = append(j.DeniedBy, p.String())
	}
	return j
}

func toJSONPeer(p *flows.Peer) *jsonPeer {
	return &jsonPeer{
		Kind: p.Kind.String(), Key: p.Key(), Namespace: p.Namespace, Labels: p.Labels,
		Entity: p.Entity, IP: p.IP, Names: p.Names, Workload: p.Workload, Identity: p.Identity,
	}
}
