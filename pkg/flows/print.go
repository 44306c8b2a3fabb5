package flows

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Printer writes events as `recommender flows` prints them: a table, or one JSON object
// (JSONEvent) per line.
type Printer struct {
	json bool
	enc  *json.Encoder
	tw   *tabwriter.Writer
	rows int
}

// NewPrinter returns a printer of JSON lines, or of a table when jsonLines is false.
func NewPrinter(w io.Writer, jsonLines bool) *Printer {
	if jsonLines {
		return &Printer{json: true, enc: json.NewEncoder(w)}
	}
	return &Printer{tw: tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)}
}

func (p *Printer) Print(ev *Event) error {
	if p.json {
		return p.enc.Encode(ToJSON(ev))
	}
	if p.rows == 0 {
		fmt.Fprintln(p.tw, "TIME\tNODE\tTYPE\tVERDICT\tSOURCE\tDESTINATION\tPORT\tL7\tPOINT")
	}
	p.rows++
	t := ev.Time.UTC().Format("2006-01-02T15:04:05.000Z")
	if ev.Kind == KindLost {
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

// Flush writes out the table (tabwriter buffers to align columns).
func (p *Printer) Flush() error {
	if p.tw != nil {
		return p.tw.Flush()
	}
	return nil
}

func l7Summary(l *L7) string {
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

// JSONEvent is the -o json form of a Event. Field names are part of the CLI's
// interface: add fields, never rename them.
type JSONEvent struct {
	Kind       string    `json:"kind"`
	Time       time.Time `json:"time"`
	Node       string    `json:"node"`
	ID         string    `json:"id"`
	Type       string    `json:"type,omitempty"`
	Point      string    `json:"point,omitempty"`
	Src        *JSONPeer `json:"src,omitempty"`
	Dst        *JSONPeer `json:"dst,omitempty"`
	Proto      string    `json:"proto,omitempty"`
	Port       uint16    `json:"port,omitempty"`
	Verdict    string    `json:"verdict,omitempty"`
	DropReason string    `json:"drop_reason,omitempty"`
	L7         *JSONL7   `json:"l7,omitempty"`
	// Connection: an L7 request that stands for its connection (no L3/L4 record of it).
	Connection bool      `json:"connection,omitempty"`
	AllowedBy  []string  `json:"allowed_by,omitempty"`
	DeniedBy   []string  `json:"denied_by,omitempty"`
	Lost       *JSONLost `json:"lost,omitempty"`
}

type JSONPeer struct {
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

type JSONL7 struct {
	DNS  *JSONDNS  `json:"dns,omitempty"`
	HTTP *JSONHTTP `json:"http,omitempty"`
}

type JSONDNS struct {
	Query    string   `json:"query"`
	Rcode    uint32   `json:"rcode"`
	IPs      []string `json:"ips,omitempty"`
	Response bool     `json:"response"`
}

type JSONHTTP struct {
	Method string `json:"method"`
	Host   string `json:"host,omitempty"`
	Path   string `json:"path"`
	Code   uint32 `json:"code,omitempty"`
}

type JSONLost struct {
	Source string `json:"source"`
	Count  uint64 `json:"count"`
}

// ToJSON returns the -o json form of ev.
func ToJSON(ev *Event) JSONEvent {
	j := JSONEvent{Time: ev.Time.UTC(), Node: ev.Node, ID: strconv.FormatUint(ev.ID, 16)}
	if ev.Kind == KindLost {
		j.Kind = "lost"
		if ev.Lost != nil {
			j.Lost = &JSONLost{Source: ev.Lost.Source, Count: ev.Lost.Count}
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
		j.L7 = &JSONL7{}
		if d := ev.L7.DNS; d != nil {
			j.L7.DNS = &JSONDNS{Query: d.Query, Rcode: d.Rcode, IPs: d.IPs, Response: d.Response}
		}
		if h := ev.L7.HTTP; h != nil {
			j.L7.HTTP = &JSONHTTP{Method: h.Method, Host: h.Host, Path: h.Path, Code: h.Code}
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

func toJSONPeer(p *Peer) *JSONPeer {
	return &JSONPeer{
		Kind: p.Kind.String(), Key: p.Key(), Namespace: p.Namespace, Labels: p.Labels,
		Entity: p.Entity, IP: p.IP, Names: p.Names, Workload: p.Workload, Identity: p.Identity,
	}
}
