package main

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/recommender/recommender/pkg/audit"
	"github.com/recommender/recommender/pkg/flows"
)

const (
	flagPolicies       = "policies"
	flagClusterName    = "cluster-name"
	flagAllowLocalhost = "allow-localhost"
)

// errWouldDeny is returned by check when the policies would deny some of the flows; the
// command's output lists them. It is distinct from errors that stopped the check.
var errWouldDeny = errors.New("policies would deny observed flows")

// errUnevaluable is returned by check when some policy documents were rejected (each is
// listed on stderr with file, document and field) and the rest were evaluated; main exits
// with status 2 for it unless a flow would also be denied.
var errUnevaluable = errors.New("policy documents could not be evaluated")

type checkOptions struct {
	src      *sourceOptions
	policies string
	audit    audit.Config
	output   string
}

func newCheckCmd(g *globalOptions) *cobra.Command {
	o := &checkOptions{src: newSourceOptions()}
	cmd := &cobra.Command{
		Use:   "check --policies DIR --flows FILE... [-o table|json]",
		Short: "Shadow-evaluate a policy directory against recorded flows",
		Long: `check reads the CiliumClusterwideNetworkPolicies and CiliumNetworkPolicies in a directory
(YAML or JSON files, several documents per file) and evaluates every flow of a recording (or
what Hubble Relay holds now, without --flows) against them, as Cilium would enforce them: the
client's egress and the server's ingress. It lists the flows the policies would deny, grouped
by direction, workload, peer and port, with counts and the rule or default that decides, and
exits with an error when there is any. Flows whose verdict depends on facts a flow does not
carry (named ports, HTTP headers) are listed as unknown and do not fail the check.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.policies == "" {
				return fmt.Errorf("--%s is required", flagPolicies)
			}
			if o.output != "table" && o.output != "json" {
				return fmt.Errorf("--%s %q: want table or json", flagOutput, o.output)
			}
			if err := o.audit.Validate(); err != nil {
				return fmt.Errorf("--%s: %w", flagAllowLocalhost, err)
			}
			if err := o.src.validate(); err != nil {
				return err
			}
			log, err := g.stderrLogger()
			if err != nil {
				return err
			}
			decoded, err := audit.LoadDir(o.policies)
			if err != nil {
				return err
			}
			for _, s := range decoded.Skipped {
				log.Info("skipping document that is not a Cilium policy", "path", s)
			}
			set, buildErr := decoded.Build(o.audit)
			if set == nil {
				return buildErr
			}
			rejected := rejectedDocs(decoded, buildErr)
			for _, r := range rejected {
				fmt.Fprintf(cmd.ErrOrStderr(), "policy not evaluated: %v\n", r)
			}
			if set.Len() == 0 {
				if len(rejected) > 0 {
					return fmt.Errorf("no policy in %s could be evaluated (%d documents rejected): %w", o.policies, len(rejected), errors.Join(rejected...))
				}
				return fmt.Errorf("no CiliumClusterwideNetworkPolicy or CiliumNetworkPolicy in %s", o.policies)
			}
			for _, w := range set.Warnings() {
				log.Warn("policy construct not evaluated", "detail", w)
			}
			o.src.stdin = cmd.InOrStdin()
			src, err := o.src.build(log, nil)
			if err != nil {
				return err
			}
			defer src.Close()
			ctx, stop := signalContext(cmd.Context())
			defer stop()

			rep := newCheckReport()
			for _, r := range rejected {
				rep.rejected = append(rep.rejected, r.Error())
			}
			for {
				ev, err := src.Recv(ctx)
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					return fmt.Errorf("read flows: %w", err)
				}
				if ev.Kind != flows.KindFlow {
					continue
				}
				v, err := set.Evaluate(ev)
				if err != nil {
					return fmt.Errorf("evaluate flow: %w", err)
				}
				rep.add(ev, v)
			}
			s := src.stats.Snapshot()
			fmt.Fprintf(cmd.ErrOrStderr(), "policies %d (%d not evaluated), flows evaluated %d, would be denied %d, already dropped in the recording %d, unknown %d (skipped %d: %s; malformed %d, lost %d)\n",
				set.Len(), len(rejected), rep.evaluated, rep.denied, rep.dropped, rep.unknown, s.Skipped, s.SkipText(), s.Malformed, s.Lost)
			src.printUnresolved(cmd.ErrOrStderr())
			if err := rep.write(cmd.OutOrStdout(), o.output); err != nil {
				return fmt.Errorf("write output: %w", err)
			}
			var errs []error
			if rep.denied > 0 {
				errs = append(errs, fmt.Errorf("%d flows in %d groups: %w", rep.denied, rep.deniedGroups(), errWouldDeny))
			}
			if len(rejected) > 0 {
				errs = append(errs, fmt.Errorf("%d %w (listed above); %d were evaluated", len(rejected), errUnevaluable, set.Len()))
			}
			return errors.Join(errs...)
		},
	}
	o.src.addFlags(cmd.Flags())
	cmd.Flags().StringVar(&o.policies, flagPolicies, "", "directory of CiliumClusterwideNetworkPolicy/CiliumNetworkPolicy YAML or JSON files (read recursively)")
	cmd.Flags().StringVar(&o.audit.ClusterName, flagClusterName, "", "Cilium cluster name (scopes peer selectors and the cluster entity; workloads of other clusters are peers only); empty evaluates the flows as one cluster, so set it for flows of a ClusterMesh")
	cmd.Flags().StringVar(&o.audit.AllowLocalhost, flagAllowLocalhost, audit.AllowLocalhostAlways, "as Cilium's --allow-localhost on Kubernetes: always (the node reaches its pods) or policy")
	cmd.Flags().StringVarP(&o.output, flagOutput, "o", "table", "output format: table or json")
	return cmd
}

// rejectedDocs lists every document that is not in the set: rejected by the decoder, or by
// Cilium's own validation when the set was built.
func rejectedDocs(d *audit.Decoded, buildErr error) []error {
	var out []error
	for _, r := range d.Rejected {
		out = append(out, r)
	}
	if j, ok := buildErr.(interface{ Unwrap() []error }); ok {
		out = append(out, j.Unwrap()...)
	} else if buildErr != nil {
		out = append(out, buildErr)
	}
	return out
}

// decisionAlreadyDropped groups the flows a policy would deny that the cluster dropped in
// the recording anyway: the policy agrees with what is enforced, so they do not fail check.
const decisionAlreadyDropped = "already-dropped"

// checkGroup counts the flows that share one direction, workload, peer, port and verdict.
type checkGroup struct {
	Direction string    `json:"direction"`
	Workload  checkPeer `json:"workload"`
	Peer      checkPeer `json:"peer"`
	Port      uint16    `json:"port"`
	Protocol  string    `json:"protocol"`
	Decision  string    `json:"decision"`
	Reason    string    `json:"reason"`
	Rule      string    `json:"rule,omitempty"`
	Detail    string    `json:"detail,omitempty"`
	Flows     uint64    `json:"flows"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	key       checkKey
}

type checkPeer struct {
	Name      string   `json:"name"`
	Kind      string   `json:"kind"`
	Namespace string   `json:"namespace,omitempty"`
	Labels    []string `json:"labels,omitempty"`
	IP        string   `json:"ip,omitempty"`
	Names     []string `json:"names,omitempty"`
}

func toCheckPeer(p *flows.Peer) checkPeer {
	return checkPeer{Name: p.String(), Kind: p.Kind.String(), Namespace: p.Namespace, Labels: p.Labels, IP: p.IP, Names: p.Names}
}

type checkKey struct {
	dir            flows.Direction
	workload, peer string
	proto          flows.Protocol
	port           uint16
	verdict        string
}

type checkReport struct {
	evaluated, denied, unknown uint64
	// dropped counts flows the policies would deny that the recording shows dropped already.
	dropped uint64
	groups  map[checkKey]*checkGroup
	// rejected names the policy documents that were not evaluated, and why.
	rejected []string
}

func newCheckReport() *checkReport { return &checkReport{groups: make(map[checkKey]*checkGroup)} }

func (r *checkReport) add(ev *flows.Event, v audit.Verdict) {
	r.evaluated++
	anyDenied, anyUnknown := false, false
	// A flow the cluster dropped in the recording (a policy or the datapath) never reached
	// its server: denying it too changes nothing, so it is reported apart and passes.
	dropped := ev.Verdict == flows.VerdictDropped
	for _, d := range []struct {
		dir            flows.Direction
		v              audit.DirectionVerdict
		workload, peer *flows.Peer
	}{{flows.DirectionEgress, v.Egress, &ev.Src, &ev.Dst}, {flows.DirectionIngress, v.Ingress, &ev.Dst, &ev.Src}} {
		if d.v.Decision != audit.DecisionDenied && d.v.Decision != audit.DecisionUnknown {
			continue
		}
		decision := d.v.Decision.String()
		if d.v.Decision == audit.DecisionDenied && dropped {
			decision = decisionAlreadyDropped
		}
		anyDenied = anyDenied || d.v.Decision == audit.DecisionDenied
		anyUnknown = anyUnknown || d.v.Decision == audit.DecisionUnknown
		k := checkKey{dir: d.dir, workload: d.workload.Key(), peer: d.peer.Key(), proto: ev.Proto, port: ev.Port, verdict: decision + " " + d.v.String()}
		g, ok := r.groups[k]
		if !ok {
			g = &checkGroup{
				Direction: d.dir.String(), Workload: toCheckPeer(d.workload), Peer: toCheckPeer(d.peer),
				Port: ev.Port, Protocol: ev.Proto.String(), Decision: decision, Reason: d.v.Reason.String(),
				Detail: d.v.Detail, FirstSeen: ev.Time, LastSeen: ev.Time, key: k,
			}
			if d.v.Rule != nil {
				g.Rule = d.v.Rule.String()
			}
			r.groups[k] = g
		}
		g.Flows++
		if ev.Time.Before(g.FirstSeen) {
			g.FirstSeen = ev.Time
		}
		if ev.Time.After(g.LastSeen) {
			g.LastSeen = ev.Time
		}
	}
	if anyDenied && dropped {
		r.dropped++
	} else if anyDenied {
		r.denied++
	} else if anyUnknown {
		r.unknown++
	}
}

func (r *checkReport) deniedGroups() int {
	n := 0
	for _, g := range r.groups {
		if g.Decision == audit.DecisionDenied.String() {
			n++
		}
	}
	return n
}

// sorted returns denied groups before unknown ones, then the largest counts first, then a
// stable order by direction, workload, peer and port.
func (r *checkReport) sorted() []*checkGroup {
	out := make([]*checkGroup, 0, len(r.groups))
	for _, g := range r.groups {
		out = append(out, g)
	}
	rank := map[string]int{audit.DecisionDenied.String(): 0, audit.DecisionUnknown.String(): 1, decisionAlreadyDropped: 2}
	slices.SortFunc(out, func(a, b *checkGroup) int {
		return cmp.Or(
			cmp.Compare(rank[a.Decision], rank[b.Decision]),
			cmp.Compare(b.Flows, a.Flows),
			cmp.Compare(a.Direction, b.Direction),
			cmp.Compare(a.key.workload, b.key.workload),
			cmp.Compare(a.key.peer, b.key.peer),
			cmp.Compare(a.Protocol, b.Protocol),
			cmp.Compare(a.Port, b.Port),
			cmp.Compare(a.key.verdict, b.key.verdict),
		)
	})
	return out
}

type checkJSON struct {
	Evaluated uint64 `json:"evaluated"`
	Denied    uint64 `json:"denied"`
	// AlreadyDropped counts flows the policies would deny that the recording shows dropped.
	AlreadyDropped uint64 `json:"already_dropped"`
	Unknown        uint64 `json:"unknown"`
	// Rejected lists the policy documents that were not evaluated (file#doc, field, why).
	Rejected []string      `json:"rejected,omitempty"`
	Groups   []*checkGroup `json:"groups"`
}

func (r *checkReport) write(w io.Writer, format string) error {
	groups := r.sorted()
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(checkJSON{Evaluated: r.evaluated, Denied: r.denied, AlreadyDropped: r.dropped, Unknown: r.unknown, Rejected: r.rejected, Groups: groups})
	}
	if len(groups) == 0 {
		_, err := fmt.Fprintf(w, "no flow would be denied (%d evaluated)\n", r.evaluated)
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "VERDICT\tDIRECTION\tWORKLOAD\tPEER\tPORT\tFLOWS\tREASON")
	for _, g := range groups {
		reason := g.Reason
		if g.Rule != "" {
			reason += ": " + g.Rule
		}
		if g.Detail != "" {
			reason += ": " + g.Detail
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d/%s\t%d\t%s\n", g.Decision, g.Direction, g.Workload.Name, g.Peer.Name, g.Port, g.Protocol, g.Flows, reason)
	}
	return tw.Flush()
}
