package eval

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	observerpb "github.com/cilium/cilium/api/v1/observer"

	"github.com/recommender/recommender/internal/flowgen"
	"github.com/recommender/recommender/pkg/aggregate"
	"github.com/recommender/recommender/pkg/audit"
	"github.com/recommender/recommender/pkg/flows"
	"github.com/recommender/recommender/pkg/synth"
)

// Case is one synthesis configuration to score.
type Case struct {
	Name  string
	Synth synth.Config
	// LearnDays is how many days of the week policies are learned from; the rest is held out.
	LearnDays int
}

// Cases are the configurations `make eval` reports: the defaults, with HTTP rules, and with
// quiet directions left open (the behaviour before issue 14). The flows of the learning days
// are folded by an aggregator with its default bounds, as the daemon's are; the week's API
// carries IDs in its paths, which the aggregator keeps as one HTTP sample per path shape.
func Cases() []Case {
	l7 := synth.DefaultConfig()
	l7.L7HTTP = true
	open := synth.DefaultConfig()
	open.QuietDirections = synth.QuietOpen
	return []Case{
		{Name: "default", Synth: synth.DefaultConfig(), LearnDays: 5},
		{Name: "--l7 http", Synth: l7, LearnDays: 5},
		{Name: "--quiet-directions=open", Synth: open, LearnDays: 5},
	}
}

// Result is the score of one case.
type Result struct {
	Case      string
	LearnDays int
	Policies  int
	// Closed counts the directions closed for lack of traffic.
	Closed int
	// HeldOut is the number of held-out flows evaluated; FalseDenies how many were denied, and
	// FalseDenied lists them as distinct tuples.
	HeldOut, FalseDenies int
	FalseDenied          []string
	// Attacks and HTTPAttacks count the attack connections and HTTP requests; the *Allowed
	// fields how many the policies let through, listed in AttacksLet.
	Attacks, AttacksAllowed         int
	HTTPAttacks, HTTPAttacksAllowed int
	AttacksLet                      []string
	// Observed and Allowed count distinct (source, destination, port) tuples; Unobserved lists
	// the allowed ones never observed.
	Observed, Allowed int
	Unobserved        []string
}

// Ratio is allowed over observed tuples.
func (r *Result) Ratio() float64 {
	if r.Observed == 0 {
		return 0
	}
	return float64(r.Allowed) / float64(r.Observed)
}

// Run scores every case on one generation of the week.
func Run(ctx context.Context, cases []Case) ([]*Result, error) {
	week, err := events(ctx, flowgen.Week)
	if err != nil {
		return nil, fmt.Errorf("generate week: %w", err)
	}
	attacks, err := events(ctx, flowgen.WeekAttacks)
	if err != nil {
		return nil, fmt.Errorf("generate attacks: %w", err)
	}
	var out []*Result
	for _, c := range cases {
		r, err := score(c, week, attacks)
		if err != nil {
			return nil, fmt.Errorf("case %s: %w", c.Name, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// events generates a scenario and reads it as `recommend --flows` does: normalized, both
// ends of a connection folded into one event.
func events(ctx context.Context, gen func(flowgen.Emit) error) ([]*flows.Event, error) {
	n := flows.NewNormalizer(nil)
	var raw []*flows.Event
	err := gen(func(r *observerpb.GetFlowsResponse) error {
		if ev, skip := n.Response(r); skip == flows.SkipNone {
			raw = append(raw, ev)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	src := flows.NewFolder(&sliceSource{events: raw}, nil)
	var out []*flows.Event
	for {
		ev, err := src.Recv(ctx)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if ev.Kind == flows.KindFlow {
			out = append(out, ev)
		}
	}
}

// sliceSource is a flows.Source over events in memory.
type sliceSource struct {
	events []*flows.Event
	next   int
}

func (s *sliceSource) Recv(ctx context.Context) (*flows.Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if s.next == len(s.events) {
		return nil, io.EOF
	}
	s.next++
	return s.events[s.next-1], nil
}

func score(c Case, week, attacks []*flows.Event) (*Result, error) {
	split := flowgen.WeekStart.Add(time.Duration(c.LearnDays) * 24 * time.Hour)
	agg, err := aggregate.NewAggregator(aggregate.Config{}, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		return nil, err
	}
	for _, ev := range week {
		if ev.Time.Before(split) {
			agg.Add(ev)
		}
	}
	res, err := synth.Synthesize(agg.Snapshot(), c.Synth)
	if err != nil {
		return nil, err
	}
	set := audit.NewPolicySet(audit.Config{ClusterName: c.Synth.ClusterName, AllowLocalhost: audit.AllowLocalhostAlways})
	closed := 0
	for _, p := range res.Proposals {
		if err := set.AddCCNP(p.Policy); err != nil {
			return nil, fmt.Errorf("policy %s: %w", p.Name, err)
		}
		closed += len(p.Closed)
	}
	r, err := scoreSet(set, split, week, attacks)
	if err != nil {
		return nil, err
	}
	r.Case, r.LearnDays, r.Policies, r.Closed = c.Name, c.LearnDays, len(res.Proposals), closed
	return r, nil
}

// scoreSet scores a policy set on the flows from split on and on the attacks.
func scoreSet(set *audit.PolicySet, split time.Time, week, attacks []*flows.Event) (*Result, error) {
	r := &Result{}
	allowed := func(ev *flows.Event) (bool, error) {
		v, err := set.Evaluate(ev)
		if err != nil {
			return false, err
		}
		return !v.Denied(), nil
	}

	denied := map[string]bool{}
	for _, ev := range week {
		if ev.Time.Before(split) {
			continue
		}
		r.HeldOut++
		ok, err := allowed(ev)
		if err != nil {
			return nil, err
		}
		if !ok {
			r.FalseDenies++
			denied[describe(ev)] = true
		}
	}
	r.FalseDenied = slices.Sorted(maps.Keys(denied))

	if err := r.scoreAttacks(attacks, allowed); err != nil {
		return nil, err
	}
	return r, r.scoreTuples(week, attacks, allowed)
}

// scoreAttacks counts attack connections (L3/L4) and HTTP requests. The L4 events of a
// connection that carries an attack request are not attacks of their own: the client uses
// that port every day.
func (r *Result) scoreAttacks(attacks []*flows.Event, allowed func(*flows.Event) (bool, error)) error {
	carriers := map[string]bool{}
	for _, ev := range attacks {
		if ev.L7 != nil && ev.L7.HTTP != nil {
			carriers[tuple(ev)] = true
		}
	}
	verdicts := map[string]bool{} // attack -> allowed (any event of it)
	http := map[string]bool{}
	for _, ev := range attacks {
		key := describe(ev)
		isHTTP := ev.L7 != nil && ev.L7.HTTP != nil
		if !isHTTP && (carriers[tuple(ev)] || ev.L7 != nil) {
			continue // the carrying connection, or its DNS lookup
		}
		ok, err := allowed(ev)
		if err != nil {
			return err
		}
		verdicts[key] = verdicts[key] || ok
		http[key] = isHTTP
	}
	for _, key := range slices.Sorted(maps.Keys(verdicts)) {
		if http[key] {
			r.HTTPAttacks++
		} else {
			r.Attacks++
		}
		if !verdicts[key] {
			continue
		}
		if http[key] {
			r.HTTPAttacksAllowed++
		} else {
			r.AttacksAllowed++
		}
		r.AttacksLet = append(r.AttacksLet, key)
	}
	return nil
}

// scoreTuples counts the observed tuples and those the policies allow over every source,
// destination and server port of the week or of the attacks, plus 53/TCP (allowed on purpose
// next to 53/UDP).
func (r *Result) scoreTuples(week, attacks []*flows.Event, allowed func(*flows.Event) (bool, error)) error {
	srcs, dsts := map[string]flows.Peer{}, map[string]flows.Peer{}
	type port struct {
		proto flows.Protocol
		port  uint16
	}
	ports := map[port]bool{}
	observed := map[string]bool{}
	for _, ev := range week {
		if ev.Src.Kind == flows.PeerEntity && ev.Src.Entity == "host" {
			continue // allow-localhost: not the policies' doing
		}
		// Every workload is both a source and a destination: a quiet direction is one nobody
		// used, and exactly what must be measured.
		for _, p := range []flows.Peer{ev.Src, ev.Dst} {
			if p.Kind == flows.PeerWorkload {
				srcs[p.Key()], dsts[p.Key()] = p, p
			}
		}
		if ev.Dst.Kind == flows.PeerWorld {
			dsts[ev.Dst.Key()] = ev.Dst
		}
		ports[port{ev.Proto, ev.Port}] = true
		observed[tuple(ev)] = true
	}
	for _, ev := range attacks {
		ports[port{ev.Proto, ev.Port}] = true
	}
	ports[port{flows.ProtoTCP, 53}] = true
	unknown := flows.Peer{Kind: flows.PeerWorld, Entity: "world", IP: "192.0.2.1"}
	srcs[unknown.Key()] = unknown
	remote := flows.Peer{Kind: flows.PeerEntity, Entity: "remote-node"}
	srcs[remote.Key()] = remote
	dsts[unknown.Key()] = unknown
	api := flows.Peer{Kind: flows.PeerEntity, Entity: "kube-apiserver"}
	dsts[api.Key()] = api

	r.Observed = len(observed)
	for _, sk := range slices.Sorted(maps.Keys(srcs)) {
		for _, dk := range slices.Sorted(maps.Keys(dsts)) {
			s, d := srcs[sk], dsts[dk]
			if sk == dk || (s.Kind != flows.PeerWorkload && d.Kind != flows.PeerWorkload) {
				continue
			}
			for p := range ports {
				ev := &flows.Event{Kind: flows.KindFlow, Src: s, Dst: d, Proto: p.proto, Port: p.port}
				ok, err := allowed(ev)
				if err != nil {
					return err
				}
				if ok {
					r.Allowed++
					if !observed[tuple(ev)] {
						r.Unobserved = append(r.Unobserved, describe(ev))
					}
				}
			}
		}
	}
	return nil
}

// tuple is (source, destination, port) of an event.
func tuple(ev *flows.Event) string {
	return ev.Src.Key() + " -> " + ev.Dst.Key() + " " + ev.PortString()
}

// describe names an event for humans: workloads by owner, HTTP requests with method and path.
func describe(ev *flows.Event) string {
	s := ev.Src.String() + " -> " + ev.Dst.String() + " " + ev.PortString()
	if ev.L7 != nil && ev.L7.HTTP != nil {
		s += " " + ev.L7.HTTP.Method + " " + ev.L7.HTTP.Path
	}
	return s
}

// WriteTable prints the results as the README shows them, then what went wrong, if anything;
// verbose adds the allowed tuples that were never observed.
func WriteTable(w io.Writer, rs []*Result, verbose bool) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CASE\tLEARN\tPOLICIES\tCLOSED\tFALSE DENIES\tATTACKS ALLOWED (L3/L4)\tHTTP ATTACKS ALLOWED\tALLOWED/OBSERVED TUPLES")
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t%d days\t%d\t%d\t%d of %d flows\t%d of %d\t%d of %d\t%d/%d = %.2f\n", r.Case, r.LearnDays, r.Policies, r.Closed,
			r.FalseDenies, r.HeldOut, r.AttacksAllowed, r.Attacks, r.HTTPAttacksAllowed, r.HTTPAttacks, r.Allowed, r.Observed, r.Ratio())
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range rs {
		if len(r.FalseDenied) > 0 {
			fmt.Fprintf(w, "\n%s: denied held-out traffic:\n  %s\n", r.Case, strings.Join(r.FalseDenied, "\n  "))
		}
		if len(r.AttacksLet) > 0 {
			fmt.Fprintf(w, "\n%s: attacks let through:\n  %s\n", r.Case, strings.Join(r.AttacksLet, "\n  "))
		}
		if verbose && len(r.Unobserved) > 0 {
			fmt.Fprintf(w, "\n%s: allowed, never observed:\n  %s\n", r.Case, strings.Join(r.Unobserved, "\n  "))
		}
	}
	return nil
}
