package flows

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/recommender/recommender/internal/flowgen"
	"github.com/recommender/recommender/internal/realdata"
)

// wireCorpus is a named set of records, as the relay would send them.
type wireCorpus struct {
	name    string
	records []*observerpb.GetFlowsResponse
}

func readRecords(t testing.TB, path string) []*observerpb.GetFlowsResponse {
	t.Helper()
	src, err := NewFileSource(FileConfig{Paths: []string{path}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var out []*observerpb.GetFlowsResponse
	for {
		r, err := src.RecvResponse(context.Background())
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, r)
	}
}

func generated(t testing.TB, gen func(flowgen.Emit) error) []*observerpb.GetFlowsResponse {
	t.Helper()
	var out []*observerpb.GetFlowsResponse
	if err := gen(func(r *observerpb.GetFlowsResponse) error { out = append(out, r); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// wireCorpora returns every bundled recording, the shapes fixtures and the real captures
// when present, and with gen the generated corpus (flowgen: a 500-pod cluster, a week with
// attacks).
func wireCorpora(t testing.TB, gen bool) []wireCorpus {
	t.Helper()
	var out []wireCorpus
	var paths []string
	for _, glob := range []string{filepath.Join(recordings, "*.jsonl"), "testdata/shapes/*"} {
		m, err := filepath.Glob(glob)
		if err != nil {
			t.Fatal(err)
		}
		paths = append(paths, m...)
	}
	if dir := realdata.Dir("flows"); dir != "" {
		m, _ := filepath.Glob(filepath.Join(dir, "*.json*"))
		paths = append(paths, m...)
	}
	for _, p := range paths {
		out = append(out, wireCorpus{p, readRecords(t, p)})
	}
	if !gen {
		return out
	}
	cfg := flowgen.DefaultClusterConfig()
	cfg.Flows = 20_000
	seq, err := flowgen.ClusterRecords(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var cluster []*observerpb.GetFlowsResponse
	for r := range seq {
		cluster = append(cluster, r)
	}
	out = append(out,
		wireCorpus{"flowgen/cluster", cluster},
		wireCorpus{"flowgen/week", generated(t, flowgen.Week)},
		wireCorpus{"flowgen/week-attacks", generated(t, flowgen.WeekAttacks)})
	return out
}

// normalized is what the Normalizer makes of one record.
type normalized struct {
	ev   *Event
	skip SkipReason
}

func normalizeBytes(t testing.TB, n *Normalizer, resp *observerpb.GetFlowsResponse) normalized {
	t.Helper()
	ev, skip := n.Response(resp)
	return normalized{ev, skip}
}

// Ensure that for every recording, the generated corpus and the real captures, the relay's
// selective decoder yields exactly the events (or skip reasons) of the full decode.
func TestWireEquivalence(t *testing.T) {
	for _, c := range wireCorpora(t, true) {
		t.Run(c.name, func(t *testing.T) {
			dec := newWireDecoder()
			full, fast := NewNormalizer(nil), NewNormalizer(nil)
			// The events are compared once all are decoded: an event that kept a pointer
			// into the decoder's reused messages would have changed by then.
			var got, want []normalized
			for i, r := range c.records {
				b, err := proto.Marshal(r)
				if err != nil {
					t.Fatal(err)
				}
				w := &observerpb.GetFlowsResponse{}
				if err := proto.Unmarshal(b, w); err != nil {
					t.Fatal(err)
				}
				g, err := dec.decode(b)
				if err != nil {
					t.Fatalf("record %d: decode: %v", i, err)
				}
				got, want = append(got, normalizeBytes(t, fast, g)), append(want, normalizeBytes(t, full, w))
			}
			for i := range got {
				if g, w := got[i], want[i]; !reflect.DeepEqual(g, w) {
					t.Fatalf("record %d: selective decode gives %+v (skip %q), full decode %+v (skip %q)", i, g.ev, g.skip, w.ev, w.skip)
				}
			}
			if len(c.records) > 0 && dec.fallbacks == uint64(len(c.records)) {
				t.Fatalf("all %d records fell back to the full decode: the fast path was not tested", len(c.records))
			}
			t.Logf("%d records, %d decoded in full", len(c.records), dec.fallbacks)
		})
	}
}

// wireSpec resolves WireFields to descriptors, failing on a name that does not exist.
func wireSpec(t testing.TB) map[protoreflect.FullName]map[protoreflect.Name]bool {
	t.Helper()
	spec := map[protoreflect.FullName]map[protoreflect.Name]bool{}
	for msg, fields := range WireFields {
		mt, err := protoregistry.GlobalTypes.FindMessageByName(protoreflect.FullName(msg))
		if err != nil {
			t.Fatalf("WireFields: message %s: %v", msg, err)
		}
		set := map[protoreflect.Name]bool{}
		for _, f := range fields {
			if mt.Descriptor().Fields().ByName(protoreflect.Name(f)) == nil {
				t.Fatalf("WireFields: %s has no field %s", msg, f)
			}
			set[protoreflect.Name(f)] = true
		}
		spec[protoreflect.FullName(msg)] = set
	}
	return spec
}

// prune clears every field of m that WireFields does not list, recursively.
func prune(m protoreflect.Message, spec map[protoreflect.FullName]map[protoreflect.Name]bool) {
	keep := spec[m.Descriptor().FullName()]
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case !keep[fd.Name()]:
			m.Clear(fd)
		case fd.IsList() && fd.Message() != nil:
			for i := range v.List().Len() {
				prune(v.List().Get(i).Message(), spec)
			}
		case fd.Message() != nil && !fd.IsMap():
			prune(v.Message(), spec)
		}
		return true
	})
	m.SetUnknown(nil)
}

// Ensure that the selective decoder decodes exactly WireFields: its result equals the full
// decode with every other field cleared, for every record it does not leave to the full
// decode.
func TestWireDecodesWireFields(t *testing.T) {
	spec := wireSpec(t)
	for _, c := range wireCorpora(t, true) {
		t.Run(c.name, func(t *testing.T) {
			dec := newWireDecoder()
			for i, r := range c.records {
				b, err := proto.Marshal(r)
				if err != nil {
					t.Fatal(err)
				}
				got := &observerpb.GetFlowsResponse{}
				if err := dec.response(b, got); err != nil {
					continue // left to the full decode; TestWireEquivalence covers it
				}
				if want := pruned(t, b, spec); !proto.Equal(got, want) {
					t.Fatalf("record %d: selective decode\n%v\nwant the full decode pruned to WireFields\n%v", i, got, want)
				}
			}
		})
	}
}

// pruned is the full decode of b pruned to the WireFields (spec): what the fast path yields.
func pruned(t testing.TB, b []byte, spec map[protoreflect.FullName]map[protoreflect.Name]bool) *observerpb.GetFlowsResponse {
	t.Helper()
	want := &observerpb.GetFlowsResponse{}
	if err := proto.Unmarshal(b, want); err != nil {
		t.Fatal(err)
	}
	prune(want.ProtoReflect(), spec)
	return want
}

// step is one hop from a message to a field (index i of a list, -1 for a singular field).
type step struct {
	fd protoreflect.FieldDescriptor
	i  int
}

func follow(m protoreflect.Message, path []step) protoreflect.Message {
	for _, s := range path {
		if s.i < 0 {
			m = m.Get(s.fd).Message()
		} else {
			m = m.Get(s.fd).List().Get(s.i).Message()
		}
	}
	return m
}

// fill returns a non-default value for fd (a list of one, a message with every field set
// to depth levels).
func fill(m protoreflect.Message, fd protoreflect.FieldDescriptor, depth int) (protoreflect.Value, bool) {
	if fd.IsMap() {
		return protoreflect.Value{}, false
	}
	if fd.IsList() {
		l := m.NewField(fd).List()
		e, ok := scalar(l.NewElement(), fd, depth)
		if !ok {
			return protoreflect.Value{}, false
		}
		l.Append(e)
		return protoreflect.ValueOfList(l), true
	}
	return scalar(m.NewField(fd), fd, depth)
}

func scalar(zero protoreflect.Value, fd protoreflect.FieldDescriptor, depth int) (protoreflect.Value, bool) {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(true), true
	case protoreflect.EnumKind:
		vs := fd.Enum().Values()
		return protoreflect.ValueOfEnum(vs.Get(vs.Len() - 1).Number()), true
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(7), true
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(7), true
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(7), true
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(7), true
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(1.5), true
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(1.5), true
	case protoreflect.StringKind:
		return protoreflect.ValueOfString("k8s:perturbed=" + string(fd.Name())), true
	case protoreflect.BytesKind:
		return protoreflect.ValueOfBytes([]byte("perturbed")), true
	case protoreflect.MessageKind, protoreflect.GroupKind:
		if depth == 0 {
			return protoreflect.Value{}, false
		}
		sub := zero.Message()
		fields := sub.Descriptor().Fields()
		for i := range fields.Len() {
			f := fields.Get(i)
			if f.ContainingOneof() != nil && sub.WhichOneof(f.ContainingOneof()) != nil {
				continue
			}
			if v, ok := fill(sub, f, depth-1); ok {
				sub.Set(f, v)
			}
		}
		return protoreflect.ValueOfMessage(sub), true
	}
	return protoreflect.Value{}, false
}

// targets lists, for m at path, every field outside WireFields (to perturb) and recurses
// into the listed message fields that are set.
func targets(m protoreflect.Message, path []step, spec map[protoreflect.FullName]map[protoreflect.Name]bool, out *[][]step) {
	keep := spec[m.Descriptor().FullName()]
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		here := append(slices.Clone(path), step{fd, -1})
		if !keep[fd.Name()] {
			*out = append(*out, here)
			continue
		}
		if fd.Message() == nil || fd.IsMap() || !m.Has(fd) {
			continue
		}
		if fd.IsList() {
			for j := range m.Get(fd).List().Len() {
				targets(m.Get(fd).List().Get(j).Message(), append(slices.Clone(path), step{fd, j}), spec, out)
			}
			continue
		}
		targets(m.Get(fd).Message(), here, spec, out)
	}
}

// Ensure that the Normalizer reads no field outside WireFields: for records of every kind
// in the corpora, clearing or setting any other field (at any depth under the listed ones)
// leaves the event unchanged. A Normalizer that starts reading another field fails here until
// the field is added to WireFields and decoded in wire.go.
func TestNormalizerReadsOnlyWireFields(t *testing.T) {
	spec := wireSpec(t)
	// One record per shape: kind, event type, L4 and L7 protocol, verdict, reply flags.
	var bases []*observerpb.GetFlowsResponse
	seen := map[string]bool{}
	for _, c := range wireCorpora(t, true) {
		for _, r := range c.records {
			f := r.GetFlow()
			key := fmt.Sprintf("%T %v %v %T %v %T %v %v %v %v %v %v", r.GetResponseTypes(), f.GetEventType().GetType(), f.GetType(),
				f.GetL4().GetProtocol(), f.GetL7().GetType(), f.GetL7().GetRecord(), f.GetVerdict(), f.GetIsReply() != nil,
				f.GetSource() == nil, f.GetDestination() == nil, len(f.GetEgressAllowedBy())+len(f.GetIngressAllowedBy()) > 0, f.GetUuid() == "")
			if !seen[key] {
				seen[key] = true
				bases = append(bases, r)
			}
		}
	}
	n := NewNormalizer(nil)
	perturbed := 0
	for bi, base := range bases {
		want := normalizeBytes(t, n, base)
		var paths [][]step
		targets(base.ProtoReflect(), nil, spec, &paths)
		for _, path := range paths {
			last := path[len(path)-1].fd
			for _, clear := range []bool{true, false} {
				c := proto.Clone(base).(*observerpb.GetFlowsResponse)
				m := follow(c.ProtoReflect(), path[:len(path)-1])
				if o := last.ContainingOneof(); o != nil && m.WhichOneof(o) != nil && m.WhichOneof(o) != last {
					continue // setting it would clear a listed member of the oneof
				}
				if clear {
					if !m.Has(last) {
						continue
					}
					m.Clear(last)
				} else {
					v, ok := fill(m, last, 3)
					if !ok {
						continue
					}
					m.Set(last, v)
				}
				perturbed++
				if got := normalizeBytes(t, n, c); !reflect.DeepEqual(got, want) {
					t.Errorf("base %d: the Normalizer reads %s (clear %v): event %+v (skip %q), was %+v (skip %q); add it to WireFields and wire.go",
						bi, last.FullName(), clear, got.ev, got.skip, want.ev, want.skip)
				}
			}
		}
	}
	t.Logf("%d base records, %d perturbations", len(bases), perturbed)
	if perturbed == 0 {
		t.Fatal("nothing perturbed")
	}
}

// FuzzWireDecode feeds arbitrary bytes to the selective decoder: it never panics, and for
// every input the full decode accepts it yields the full decode's event.
func FuzzWireDecode(f *testing.F) {
	seen := map[string]bool{}
	for _, c := range wireCorpora(f, false) {
		for _, r := range c.records {
			fl := r.GetFlow()
			key := fmt.Sprintf("%T %v %T %T %v", r.GetResponseTypes(), fl.GetEventType().GetType(), fl.GetL4().GetProtocol(), fl.GetL7().GetRecord(), fl.GetVerdict())
			if seen[key] {
				continue
			}
			seen[key] = true
			b, err := proto.Marshal(r)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x00})
	full, fast := NewNormalizer(nil), NewNormalizer(nil)
	f.Fuzz(func(t *testing.T, b []byte) {
		dec := newWireDecoder()
		got, gerr := dec.decode(b)
		want := &observerpb.GetFlowsResponse{}
		if err := proto.Unmarshal(b, want); err != nil {
			return // invalid input: only not panicking is required
		}
		if gerr != nil {
			t.Fatalf("full decode accepts the record, selective decode fails: %v", gerr)
		}
		g, w := normalizeBytes(t, fast, got), normalizeBytes(t, full, want)
		if !reflect.DeepEqual(g, w) {
			t.Fatalf("selective decode gives %+v (skip %q), full decode %+v (skip %q)", g.ev, g.skip, w.ev, w.skip)
		}
	})
}

// BenchmarkDecode compares the relay source's selective decode with the full decode of the
// same marshaled records (a 500-pod flowgen cluster), without the network; one op is one
// record.
func BenchmarkDecode(b *testing.B) {
	cfg := flowgen.DefaultClusterConfig()
	cfg.Flows = 20_000
	seq, err := flowgen.ClusterRecords(cfg)
	if err != nil {
		b.Fatal(err)
	}
	var raw [][]byte
	for r := range seq {
		m, err := proto.Marshal(r)
		if err != nil {
			b.Fatal(err)
		}
		raw = append(raw, m)
	}
	b.Run("selective", func(b *testing.B) {
		dec := newWireDecoder()
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, err := dec.decode(raw[i%len(raw)]); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("full", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if err := proto.Unmarshal(raw[i%len(raw)], &observerpb.GetFlowsResponse{}); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}

// bytesCodec lets a test server send prepared bytes, valid protobuf or not.
type bytesCodec struct{}

func (bytesCodec) Marshal(v any) (mem.BufferSlice, error) {
	if b, ok := v.([]byte); ok {
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	return protoCodec.Marshal(v)
}
func (bytesCodec) Unmarshal(d mem.BufferSlice, v any) error { return protoCodec.Unmarshal(d, v) }
func (bytesCodec) Name() string                             { return "proto" }

// Ensure that a record that does not decode is counted as malformed and skipped, and the
// stream goes on: a failed stream would be resumed into the same record forever.
func TestRelaySkipsUndecodableRecord(t *testing.T) {
	var good []byte
	norm := NewNormalizer(nil)
	for _, r := range readRecords(t, "../../testdata/flows/starwars.jsonl") {
		if _, skip := norm.Response(r); skip == SkipNone && r.GetFlow() != nil {
			var err error
			if good, err = proto.Marshal(r); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	// A flow whose node_name (field 11) is not UTF-8: proto.Unmarshal refuses it.
	bad := protowire.AppendTag(nil, 1, protowire.BytesType)
	bad = protowire.AppendBytes(bad, protowire.AppendBytes(protowire.AppendTag(nil, 11, protowire.BytesType), []byte{0xff, 0xfe}))
	if err := proto.Unmarshal(bad, &observerpb.GetFlowsResponse{}); err == nil {
		t.Fatal("the bad record decodes")
	}
	srv := grpc.NewServer(grpc.ForceServerCodecV2(bytesCodec{}))
	srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: "observer.Observer",
		HandlerType: (*any)(nil),
		Streams: []grpc.StreamDesc{{StreamName: "GetFlows", ServerStreams: true, Handler: func(_ any, s grpc.ServerStream) error {
			if err := s.RecvMsg(&observerpb.GetFlowsRequest{}); err != nil {
				return err
			}
			for _, b := range [][]byte{good, bad, good} {
				if err := s.SendMsg(b); err != nil {
					return err
				}
			}
			return nil
		}}},
	}, struct{}{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis) //nolint:errcheck // ends with Stop
	defer srv.Stop()

	src, err := NewRelaySource(RelayConfig{Server: lis.Addr().String(), Retries: 1}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	n := 0
	for {
		_, err := src.Recv(t.Context())
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	s := src.Stats().Snapshot()
	// The two good records are the same flow: the second is a resumed duplicate only after a
	// reconnect, which must not happen here.
	if n != 2 || s.Malformed != 1 || src.State().Reconnects != 0 {
		t.Errorf("events %d, malformed %d, reconnects %d; want 2, 1, 0 (%s)", n, s.Malformed, src.State().Reconnects, s)
	}
}

// Ensure that the scratch messages reused from record to record carry nothing over: a
// record with fewer workloads, or a workload without a kind, after one with more decodes as
// the full decode does.
func TestWireScratchCarriesNothingOver(t *testing.T) {
	spec := wireSpec(t)
	flow := func(ws ...*flowpb.Workload) *observerpb.GetFlowsResponse {
		return &observerpb.GetFlowsResponse{NodeName: "node-1", ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: &flowpb.Flow{
			NodeName: "node-1", Verdict: flowpb.Verdict_FORWARDED,
			Source:      &flowpb.Endpoint{Namespace: "shop", Labels: []string{"k8s:app=web"}, Workloads: ws},
			Destination: &flowpb.Endpoint{Namespace: "shop", Labels: []string{"k8s:app=db"}},
		}}}
	}
	dec := newWireDecoder()
	for i, r := range []*observerpb.GetFlowsResponse{
		flow(&flowpb.Workload{Kind: "Deployment", Name: "web"}, &flowpb.Workload{Kind: "ReplicaSet", Name: "web-1"}),
		flow(&flowpb.Workload{Name: "web"}),
		flow(),
		flow(&flowpb.Workload{Kind: "StatefulSet"}),
	} {
		b, err := proto.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		got, err := dec.decode(b)
		if err != nil {
			t.Fatal(err)
		}
		if want := pruned(t, b, spec); !proto.Equal(got, want) {
			t.Errorf("record %d: decoded after the others\n%v\nwant\n%v", i, got, want)
		}
	}
	if dec.fallbacks != 0 {
		t.Errorf("%d records decoded in full: the fast path was not tested", dec.fallbacks)
	}
}
