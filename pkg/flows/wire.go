package flows

import (
	"errors"
	"fmt"
	"unicode/utf8"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The selective decoder of the relay stream (issue 19). A full proto.Unmarshal of each
// GetFlowsResponse was 60% of the daemon's receive path: it builds every field of a Flow
// (node labels, summary, ethernet, services, interface, trace context, ...) of which the
// Normalizer reads a handful. wireDecoder reads only those fields straight from the wire
// into a partially populated GetFlowsResponse and hands it to the same Normalizer, so the
// normalization rules exist once. The strings that repeat endlessly in a stream (labels,
// namespaces, pod and node names, addresses) are interned instead of allocated per record.
//
// WireFields is the one list of the fields decoded. Two tests hold everything to it:
// TestWireDecodesWireFields checks that the decoder yields exactly the full decode pruned to
// WireFields, and TestNormalizerReadsOnlyWireFields perturbs every other field of real and
// generated records and fails when the Normalizer's result changes, so a Normalizer that
// starts reading a new field fails the build until the field is added here.
//
// Anything the decoder does not handle falls back to proto.Unmarshal of the whole record:
// node status messages, a known field number with an unexpected wire type, invalid UTF-8 in
// a decoded string, a malformed record. Fields outside WireFields are skipped unchecked, so a
// record that is malformed only there yields an event where the full decode would fail.

// WireFields lists, per message (full protobuf name), the fields the relay source decodes:
// the fields the Normalizer reads, plus Endpoint.cluster_name for ClusterMesh. A message
// that is listed is decoded only in these fields; one that is not, wherever it is reached
// from a listed field, is not decoded at all.
var WireFields = map[string][]string{
	"observer.GetFlowsResponse": {"flow", "lost_events", "node_name", "time"},
	"flow.Flow": {
		"time", "uuid", "verdict", "IP", "l4", "source", "destination", "Type", "node_name",
		"source_names", "destination_names", "l7", "reply", "event_type", "traffic_direction",
		"trace_observation_point", "drop_reason_desc", "is_reply",
		"egress_allowed_by", "ingress_allowed_by", "egress_denied_by", "ingress_denied_by",
		"policy_log",
	},
	"flow.LostEvent":             {"source", "num_events_lost", "cpu"},
	"flow.IP":                    {"source", "destination"},
	"flow.Layer4":                {"TCP", "UDP", "ICMPv4", "ICMPv6", "SCTP"},
	"flow.TCP":                   {"source_port", "destination_port", "flags"},
	"flow.TCPFlags":              {"SYN", "ACK"},
	"flow.UDP":                   {"source_port", "destination_port"},
	"flow.SCTP":                  {"source_port", "destination_port"},
	"flow.ICMPv4":                {"type"},
	"flow.ICMPv6":                {"type"},
	"flow.Endpoint":              {"identity", "cluster_name", "namespace", "labels", "pod_name", "workloads"},
	"flow.Workload":              {"name", "kind"},
	"flow.Layer7":                {"type", "dns", "http"},
	"flow.DNS":                   {"query", "ips", "rcode"},
	"flow.HTTP":                  {"code", "method", "url"},
	"flow.CiliumEventType":       {"type"},
	"flow.Policy":                {"name", "namespace", "kind"},
	"google.protobuf.Timestamp":  {"seconds", "nanos"},
	"google.protobuf.BoolValue":  {"value"},
	"google.protobuf.Int32Value": {"value"},
}

// errWireShape marks a record the selective decoder leaves to the full decode.
var errWireShape = errors.New("record shape left to the full decode")

// maxInterned bounds the interned strings; the table is cleared when full, which only costs
// allocations until it is warm again.
const maxInterned = 1 << 16

// wireDecoder decodes GetFlowsResponse records selectively. It is not safe for concurrent
// use: each RelaySource has its own.
//
// The messages of a record decoded on the fast path are reused for the next record (s), so a
// response is valid until the next decode. That holds because the Normalizer keeps no
// pointer into a Flow once it returned: its Event holds strings (immutable, interned here)
// and slices it builds itself, except DNS.Ips, which is a new slice for every record (Reset
// clears it). The slices reused are the endpoints' Labels and Workloads (with the Workload
// messages in it), which the Normalizer copies from.
// TestWireEquivalence checks all of it by comparing the events only after the whole corpus
// was decoded.
type wireDecoder struct {
	strs map[string]string
	s    wireScratch
	// fallbacks counts records decoded in full because the fast path did not handle them.
	fallbacks uint64
}

// wireScratch holds one of each message the fast path fills, reused from record to record.
type wireScratch struct {
	resp               observerpb.GetFlowsResponse
	flowOneof          observerpb.GetFlowsResponse_Flow
	lostOneof          observerpb.GetFlowsResponse_LostEvents
	flow               flowpb.Flow
	lost               flowpb.LostEvent
	cpu                wrapperspb.Int32Value
	respTime, flowTime timestamppb.Timestamp
	ip                 flowpb.IP
	l4                 flowpb.Layer4
	tcpOneof           flowpb.Layer4_TCP
	udpOneof           flowpb.Layer4_UDP
	icmp4Oneof         flowpb.Layer4_ICMPv4
	icmp6Oneof         flowpb.Layer4_ICMPv6
	sctpOneof          flowpb.Layer4_SCTP
	tcp                flowpb.TCP
	flags              flowpb.TCPFlags
	udp                flowpb.UDP
	icmp4              flowpb.ICMPv4
	icmp6              flowpb.ICMPv6
	sctp               flowpb.SCTP
	src, dst           flowpb.Endpoint
	l7                 flowpb.Layer7
	dnsOneof           flowpb.Layer7_Dns
	httpOneof          flowpb.Layer7_Http
	dns                flowpb.DNS
	http               flowpb.HTTP
	eventType          flowpb.CiliumEventType
	isReply            wrapperspb.BoolValue
}

// fresh resets a scratch message for the record being decoded.
func fresh[T any, P interface {
	*T
	Reset()
}](m P) P {
	m.Reset()
	return m
}

// freshEndpoint resets a scratch endpoint but keeps its labels' and workloads' arrays, and
// the workloads in them (nextWorkload), for the new record.
func freshEndpoint(ep *flowpb.Endpoint) *flowpb.Endpoint {
	labels, workloads := ep.Labels[:0], ep.Workloads[:0]
	ep.Reset()
	ep.Labels, ep.Workloads = labels, workloads
	return ep
}

// nextWorkload appends an empty Workload to a scratch endpoint's, reusing one an earlier
// record left in its array: two per flow were allocated before.
func nextWorkload(ep *flowpb.Endpoint) *flowpb.Workload {
	n := len(ep.Workloads)
	if n < cap(ep.Workloads) {
		ep.Workloads = ep.Workloads[:n+1]
		if w := ep.Workloads[n]; w != nil {
			w.Reset()
			return w
		}
	} else {
		ep.Workloads = append(ep.Workloads, nil)
	}
	w := &flowpb.Workload{}
	ep.Workloads[n] = w
	return w
}

func newWireDecoder() *wireDecoder { return &wireDecoder{strs: make(map[string]string)} }

// decode returns the record with the WireFields decoded, or the full decode of a record the
// fast path does not handle; the error is the full decode's.
func (d *wireDecoder) decode(b []byte) (*observerpb.GetFlowsResponse, error) {
	resp := fresh(&d.s.resp)
	if err := d.response(b, resp); err == nil {
		return resp, nil
	}
	d.fallbacks++
	resp = &observerpb.GetFlowsResponse{}
	if err := proto.Unmarshal(b, resp); err != nil {
		return nil, fmt.Errorf("decode flow record: %w", err)
	}
	return resp, nil
}

// wireCodec is grpc's proto codec, except that it hands the bytes of a *wireResponse to the
// selective decoder. The bytes are decoded while grpc holds them (every string is copied or
// interned), so nothing refers to grpc's buffers afterwards. A record that does not decode
// is reported in the wireResponse, not as a codec error: a codec error would fail the stream,
// and the resumed stream would send the same record again.
type wireCodec struct{}

var protoCodec = encoding.GetCodecV2(grpcproto.Name)

func (wireCodec) Marshal(v any) (mem.BufferSlice, error) { return protoCodec.Marshal(v) }

func (wireCodec) Unmarshal(data mem.BufferSlice, v any) error {
	w, ok := v.(*wireResponse)
	if !ok {
		return protoCodec.Unmarshal(data, v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	w.resp, w.err = w.dec.decode(buf.ReadOnlyData())
	return nil
}

func (wireCodec) Name() string { return grpcproto.Name }

// wireResponse receives one GetFlows record through wireCodec.
type wireResponse struct {
	dec  *wireDecoder
	resp *observerpb.GetFlowsResponse
	err  error
}

// getFlowsStream is the GetFlows method as the generated client opens it, with wireCodec.
var getFlowsStream = &grpc.StreamDesc{StreamName: "GetFlows", ServerStreams: true}

// walk calls fn for each field of the message in b, with the payload of a length-delimited
// field or the value of a varint or fixed field. Groups are skipped.
func walk(b []byte, fn func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errWireShape
		}
		b = b[n:]
		var v []byte
		var x uint64
		switch typ {
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		case protowire.Fixed32Type:
			var x32 uint32
			x32, n = protowire.ConsumeFixed32(b)
			x = uint64(x32)
		case protowire.Fixed64Type:
			x, n = protowire.ConsumeFixed64(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return errWireShape
		}
		b = b[n:]
		if typ == protowire.StartGroupType || typ == protowire.EndGroupType {
			continue
		}
		if err := fn(num, typ, v, x); err != nil {
			return err
		}
	}
	return nil
}

// str interns a string field, checking UTF-8 as proto3 decoding does.
func (d *wireDecoder) str(v []byte) (string, error) {
	if s, ok := d.strs[string(v)]; ok {
		return s, nil
	}
	if !utf8.Valid(v) {
		return "", errWireShape
	}
	s := string(v)
	putCapped(d.strs, s, s, maxInterned)
	return s, nil
}

// wireType checks a known field's wire type.
func wireType(typ, w protowire.Type) error {
	if typ != w {
		return errWireShape
	}
	return nil
}

func (d *wireDecoder) response(b []byte, r *observerpb.GetFlowsResponse) error {
	return walk(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) (err error) {
		switch num {
		case 1: // flow
			if err = wireType(typ, protowire.BytesType); err != nil {
				return err
			}
			f, ok := r.ResponseTypes.(*observerpb.GetFlowsResponse_Flow)
			if !ok {
				d.s.flowOneof.Flow = fresh(&d.s.flow)
				f = &d.s.flowOneof
				r.ResponseTypes = f
			}
			return d.flow(v, f.Flow)
		case 2: // node_status: rare, left to the full decode
			return errWireShape
		case 3: // lost_events
			if err = wireType(typ, protowire.BytesType); err != nil {
				return err
			}
			l, ok := r.ResponseTypes.(*observerpb.GetFlowsResponse_LostEvents)
			if !ok {
				d.s.lostOneof.LostEvents = fresh(&d.s.lost)
				l = &d.s.lostOneof
				r.ResponseTypes = l
			}
			return d.lost(v, l.LostEvents)
		case 1000: // node_name
			if err = wireType(typ, protowire.BytesType); err != nil {
				return err
			}
			r.NodeName, err = d.str(v)
		case 1001: // time
			if err = wireType(typ, protowire.BytesType); err != nil {
				return err
			}
			if r.Time == nil {
				r.Time = fresh(&d.s.respTime)
			}
			return timestamp(v, r.Time)
		}
		return err
	})
}

func (d *wireDecoder) lost(b []byte, l *flowpb.LostEvent) error {
	return walk(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch num {
		case 1: // source
			if err := wireType(typ, protowire.VarintType); err != nil {
				return err
			}
			l.Source = flowpb.LostEventSource(int32(x))
		case 2: // num_events_lost
			if err := wireType(typ, protowire.VarintType); err != nil {
				return err
			}
			l.NumEventsLost = x
		case 3: // cpu
			if err := wireType(typ, protowire.BytesType); err != nil {
				return err
			}
			if l.Cpu == nil {
				l.Cpu = fresh(&d.s.cpu)
			}
			return walk(v, func(num protowire.Number, typ protowire.Type, _ []byte, x uint64) error {
				if num == 1 {
					if err := wireType(typ, protowire.VarintType); err != nil {
						return err
					}
					l.Cpu.Value = int32(x)
				}
				return nil
			})
		}
		return nil
	})
}

func timestamp(b []byte, t *timestamppb.Timestamp) error {
	return walk(b, func(num protowire.Number, typ protowire.Type, _ []byte, x uint64) error {
		switch num {
		case 1:
			if err := wireType(typ, protowire.VarintType); err != nil {
				return err
			}
			t.Seconds = int64(x)
		case 2:
			if err := wireType(typ, protowire.VarintType); err != nil {
				return err
			}
			t.Nanos = int32(x)
		}
		return nil
	})
}

func (d *wireDecoder) flow(b []byte, f *flowpb.Flow) error {
	return walk(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) (err error) {
		switch num {
		case 1: // time
			if err = wireType(typ, protowire.BytesType); err == nil {
				if f.Time == nil {
					f.Time = fresh(&d.s.flowTime)
				}
				err = timestamp(v, f.Time)
			}
		case 34: // uuid: unique per flow, not interned
			if err = wireType(typ, protowire.BytesType); err == nil {
				if !utf8.Valid(v) {
					return errWireShape
				}
				f.Uuid = string(v)
			}
		case 2: // verdict
			if err = wireType(typ, protowire.VarintType); err == nil {
				f.Verdict = flowpb.Verdict(int32(x))
			}
		case 5: // IP
			if err = wireType(typ, protowire.BytesType); err == nil {
				if f.IP == nil {
					f.IP = fresh(&d.s.ip)
				}
				err = d.ip(v, f.IP)
			}
		case 6: // l4
			if err = wireType(typ, protowire.BytesType); err == nil {
				if f.L4 == nil {
					f.L4 = fresh(&d.s.l4)
				}
				err = d.l4(v, f.L4)
			}
		case 8: // source
			if err = wireType(typ, protowire.BytesType); err == nil {
				if f.Source == nil {
					f.Source = freshEndpoint(&d.s.src)
				}
				err = d.endpoint(v, f.Source)
			}
		case 9: // destination
			if err = wireType(typ, protowire.BytesType); err == nil {
				if f.Destination == nil {
					f.Destination = freshEndpoint(&d.s.dst)
				}
				err = d.endpoint(v, f.Destination)
			}
		case 10: // Type
			if err = wireType(typ, protowire.VarintType); err == nil {
				f.Type = flowpb.FlowType(int32(x))
			}
		case 11: // node_name
			if err = wireType(typ, protowire.BytesType); err == nil {
				f.NodeName, err = d.str(v)
			}
		case 13: // source_names
			if err = wireType(typ, protowire.BytesType); err == nil {
				var s string
				if s, err = d.str(v); err == nil {
					f.SourceNames = append(f.SourceNames, s)
				}
			}
		case 14: // destination_names
			if err = wireType(typ, protowire.BytesType); err == nil {
				var s string
				if s, err = d.str(v); err == nil {
					f.DestinationNames = append(f.DestinationNames, s)
				}
			}
		case 15: // l7
			if err = wireType(typ, protowire.BytesType); err == nil {
				if f.L7 == nil {
					f.L7 = fresh(&d.s.l7)
				}
				err = d.l7(v, f.L7)
			}
		case 16: // reply
			if err = wireType(typ, protowire.VarintType); err == nil {
				f.Reply = x != 0
			}
		case 19: // event_type
			if err = wireType(typ, protowire.BytesType); err == nil {
				if f.EventType == nil {
					f.EventType = fresh(&d.s.eventType)
				}
				err = walk(v, func(num protowire.Number, typ protowire.Type, _ []byte, x uint64) error {
					if num == 1 {
						if err := wireType(typ, protowire.VarintType); err != nil {
							return err
						}
						f.EventType.Type = int32(x)
					}
					return nil
				})
			}
		case 22: // traffic_direction
			if err = wireType(typ, protowire.VarintType); err == nil {
				f.TrafficDirection = flowpb.TrafficDirection(int32(x))
			}
		case 24: // trace_observation_point
			if err = wireType(typ, protowire.VarintType); err == nil {
				f.TraceObservationPoint = flowpb.TraceObservationPoint(int32(x))
			}
		case 25: // drop_reason_desc
			if err = wireType(typ, protowire.VarintType); err == nil {
				f.DropReasonDesc = flowpb.DropReason(int32(x))
			}
		case 26: // is_reply
			if err = wireType(typ, protowire.BytesType); err == nil {
				if f.IsReply == nil {
					f.IsReply = fresh(&d.s.isReply)
				}
				err = walk(v, func(num protowire.Number, typ protowire.Type, _ []byte, x uint64) error {
					if num == 1 {
						if err := wireType(typ, protowire.VarintType); err != nil {
							return err
						}
						f.IsReply.Value = x != 0
					}
					return nil
				})
			}
		case 21006: // policy_log
			if err = wireType(typ, protowire.BytesType); err == nil {
				var s string
				if s, err = d.str(v); err == nil {
					f.PolicyLog = append(f.PolicyLog, s)
				}
			}
		case 21001, 21002, 21004, 21005: // egress/ingress allowed/denied by
			if err = wireType(typ, protowire.BytesType); err == nil {
				p := &flowpb.Policy{}
				if err = d.policy(v, p); err == nil {
					switch num {
					case 21001:
						f.EgressAllowedBy = append(f.EgressAllowedBy, p)
					case 21002:
						f.IngressAllowedBy = append(f.IngressAllowedBy, p)
					case 21004:
						f.EgressDeniedBy = append(f.EgressDeniedBy, p)
					case 21005:
						f.IngressDeniedBy = append(f.IngressDeniedBy, p)
					}
				}
			}
		}
		return err
	})
}

func (d *wireDecoder) ip(b []byte, ip *flowpb.IP) error {
	return walk(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) (err error) {
		switch num {
		case 1:
			if err = wireType(typ, protowire.BytesType); err == nil {
				ip.Source, err = d.str(v)
			}
		case 2:
			if err = wireType(typ, protowire.BytesType); err == nil {
				ip.Destination, err = d.str(v)
			}
		}
		return err
	})
}

// ports decodes the source and destination ports of TCP, UDP and SCTP (fields 1 and 2).
func ports(num protowire.Number, typ protowire.Type, x uint64, src, dst *uint32) error {
	switch num {
	case 1:
		if err := wireType(typ, protowire.VarintType); err != nil {
			return err
		}
		*src = uint32(x)
	case 2:
		if err := wireType(typ, protowire.VarintType); err != nil {
			return err
		}
		*dst = uint32(x)
	}
	return nil
}

// icmpType decodes the type (field 1) of ICMPv4 and ICMPv6.
func icmpType(b []byte, t *uint32) error {
	return walk(b, func(num protowire.Number, typ protowire.Type, _ []byte, x uint64) error {
		if num == 1 {
			if err := wireType(typ, protowire.VarintType); err != nil {
				return err
			}
			*t = uint32(x)
		}
		return nil
	})
}

func (d *wireDecoder) l4(b []byte, l *flowpb.Layer4) error {
	return walk(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if num == 6 || num == 7 { // VRRP, IGMP: other members of the protocol oneof
			return errWireShape
		}
		if num < 1 || num > 5 {
			return nil
		}
		if err := wireType(typ, protowire.BytesType); err != nil {
			return err
		}
		// A oneof: a second occurrence of the same member merges into it, another member
		// replaces it, as proto.Unmarshal does.
		switch num {
		case 1:
			p, ok := l.Protocol.(*flowpb.Layer4_TCP)
			if !ok {
				d.s.tcpOneof.TCP = fresh(&d.s.tcp)
				p = &d.s.tcpOneof
				l.Protocol = p
			}
			t := p.TCP
			return walk(v, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
				if num != 3 {
					return ports(num, typ, x, &t.SourcePort, &t.DestinationPort)
				}
				if err := wireType(typ, protowire.BytesType); err != nil {
					return err
				}
				if t.Flags == nil {
					t.Flags = fresh(&d.s.flags)
				}
				return walk(v, func(num protowire.Number, typ protowire.Type, _ []byte, x uint64) error {
					switch num {
					case 2:
						if err := wireType(typ, protowire.VarintType); err != nil {
							return err
						}
						t.Flags.SYN = x != 0
					case 5:
						if err := wireType(typ, protowire.VarintType); err != nil {
							return err
						}
						t.Flags.ACK = x != 0
					}
					return nil
				})
			})
		case 2:
			p, ok := l.Protocol.(*flowpb.Layer4_UDP)
			if !ok {
				d.s.udpOneof.UDP = fresh(&d.s.udp)
				p = &d.s.udpOneof
				l.Protocol = p
			}
			return walk(v, func(num protowire.Number, typ protowire.Type, _ []byte, x uint64) error {
				return ports(num, typ, x, &p.UDP.SourcePort, &p.UDP.DestinationPort)
			})
		case 3:
			p, ok := l.Protocol.(*flowpb.Layer4_ICMPv4)
			if !ok {
				d.s.icmp4Oneof.ICMPv4 = fresh(&d.s.icmp4)
				p = &d.s.icmp4Oneof
				l.Protocol = p
			}
			return icmpType(v, &p.ICMPv4.Type)
		case 4:
			p, ok := l.Protocol.(*flowpb.Layer4_ICMPv6)
			if !ok {
				d.s.icmp6Oneof.ICMPv6 = fresh(&d.s.icmp6)
				p = &d.s.icmp6Oneof
				l.Protocol = p
			}
			return icmpType(v, &p.ICMPv6.Type)
		default: // 5
			p, ok := l.Protocol.(*flowpb.Layer4_SCTP)
			if !ok {
				d.s.sctpOneof.SCTP = fresh(&d.s.sctp)
				p = &d.s.sctpOneof
				l.Protocol = p
			}
			return walk(v, func(num protowire.Number, typ protowire.Type, _ []byte, x uint64) error {
				return ports(num, typ, x, &p.SCTP.SourcePort, &p.SCTP.DestinationPort)
			})
		}
	})
}

func (d *wireDecoder) endpoint(b []byte, ep *flowpb.Endpoint) error {
	return walk(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) (err error) {
		switch num {
		case 2: // identity
			if err = wireType(typ, protowire.VarintType); err == nil {
				ep.Identity = uint32(x)
			}
		case 7: // cluster_name
			if err = wireType(typ, protowire.BytesType); err == nil {
				ep.ClusterName, err = d.str(v)
			}
		case 3: // namespace
			if err = wireType(typ, protowire.BytesType); err == nil {
				ep.Namespace, err = d.str(v)
			}
		case 4: // labels
			if err = wireType(typ, protowire.BytesType); err == nil {
				var s string
				if s, err = d.str(v); err == nil {
					ep.Labels = append(ep.Labels, s)
				}
			}
		case 5: // pod_name
			if err = wireType(typ, protowire.BytesType); err == nil {
				ep.PodName, err = d.str(v)
			}
		case 6: // workloads
			if err = wireType(typ, protowire.BytesType); err == nil {
				w := nextWorkload(ep)
				err = walk(v, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) (err error) {
					switch num {
					case 1:
						if err = wireType(typ, protowire.BytesType); err == nil {
							w.Name, err = d.str(v)
						}
					case 2:
						if err = wireType(typ, protowire.BytesType); err == nil {
							w.Kind, err = d.str(v)
						}
					}
					return err
				})
			}
		}
		return err
	})
}

func (d *wireDecoder) l7(b []byte, l *flowpb.Layer7) error {
	return walk(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch num {
		case 1: // type
			if err := wireType(typ, protowire.VarintType); err != nil {
				return err
			}
			l.Type = flowpb.L7FlowType(int32(x))
		case 100: // dns
			if err := wireType(typ, protowire.BytesType); err != nil {
				return err
			}
			r, ok := l.Record.(*flowpb.Layer7_Dns)
			if !ok {
				d.s.dnsOneof.Dns = fresh(&d.s.dns)
				r = &d.s.dnsOneof
				l.Record = r
			}
			dns := r.Dns
			return walk(v, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) (err error) {
				switch num {
				case 1:
					if err = wireType(typ, protowire.BytesType); err == nil {
						dns.Query, err = d.str(v)
					}
				case 2:
					if err = wireType(typ, protowire.BytesType); err == nil {
						var s string
						if s, err = d.str(v); err == nil {
							dns.Ips = append(dns.Ips, s)
						}
					}
				case 6:
					if err = wireType(typ, protowire.VarintType); err == nil {
						dns.Rcode = uint32(x)
					}
				}
				return err
			})
		case 101: // http
			if err := wireType(typ, protowire.BytesType); err != nil {
				return err
			}
			r, ok := l.Record.(*flowpb.Layer7_Http)
			if !ok {
				d.s.httpOneof.Http = fresh(&d.s.http)
				r = &d.s.httpOneof
				l.Record = r
			}
			h := r.Http
			return walk(v, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) (err error) {
				switch num {
				case 1:
					if err = wireType(typ, protowire.VarintType); err == nil {
						h.Code = uint32(x)
					}
				case 2:
					if err = wireType(typ, protowire.BytesType); err == nil {
						h.Method, err = d.str(v)
					}
				case 3: // url: often unique (ids, queries), not interned
					if err = wireType(typ, protowire.BytesType); err == nil {
						if !utf8.Valid(v) {
							return errWireShape
						}
						h.Url = string(v)
					}
				}
				return err
			})
		case 102: // kafka: another member of the record oneof, not decoded
			return errWireShape
		}
		return nil
	})
}

func (d *wireDecoder) policy(b []byte, p *flowpb.Policy) error {
	return walk(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) (err error) {
		switch num {
		case 1:
			if err = wireType(typ, protowire.BytesType); err == nil {
				p.Name, err = d.str(v)
			}
		case 2:
			if err = wireType(typ, protowire.BytesType); err == nil {
				p.Namespace, err = d.str(v)
			}
		case 5:
			if err = wireType(typ, protowire.BytesType); err == nil {
				p.Kind, err = d.str(v)
			}
		}
		return err
	})
}
