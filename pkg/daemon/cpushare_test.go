package daemon

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// The ingest benchmarks report which share of the CPU profile of their timed part went to
// protobuf decoding (issue 19). The profile is read here with protowire rather than
// github.com/google/pprof/profile, which the module does not otherwise need.

// decodeFuncs are the functions whose samples count as decoding: the relay source's
// selective codec (its fallback to the full decode included) and grpc's proto codec, which
// the reference consumer decodes with.
var decodeFuncs = []string{
	"pkg/flows.wireCodec.Unmarshal",
	"grpc/encoding/proto.(*codecV2).Unmarshal",
}

// cpuProfile is a CPU profile of a benchmark's timed part, kept in memory and, when path is
// set, also written there.
type cpuProfile struct {
	buf  bytes.Buffer
	path string
	on   bool
}

// startCPUProfile starts profiling; without a profiler (-test.cpuprofile holds it) the
// shares are not reported.
func startCPUProfile(b *testing.B, path string) *cpuProfile {
	b.Helper()
	p := &cpuProfile{path: path}
	if err := pprof.StartCPUProfile(&p.buf); err != nil {
		if path != "" {
			b.Fatalf("%v (-ingest.cpuprofile and -test.cpuprofile cannot be combined)", err)
		}
		b.Logf("no decode share: %v", err)
		return p
	}
	p.on = true
	return p
}

// stop ends the profile and reports decode-% (samples under a decode function, of all the
// process's samples) and decode-recv-% (of the samples under the consumer's receive loop,
// recvFunc).
func (p *cpuProfile) stop(b *testing.B, recvFunc string) {
	b.Helper()
	if !p.on {
		return
	}
	pprof.StopCPUProfile()
	if p.path != "" {
		if err := os.WriteFile(p.path, p.buf.Bytes(), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	stacks, err := profileStacks(p.buf.Bytes())
	if err != nil {
		b.Fatalf("read cpu profile: %v", err)
	}
	var total, decode, recv int64
	for _, s := range stacks {
		total += s.n
		if s.has(decodeFuncs...) {
			decode += s.n
		}
		if s.has(recvFunc) {
			recv += s.n
		}
	}
	if total == 0 || recv == 0 {
		b.Logf("no decode share: %d samples, %d under %s", total, recv, recvFunc)
		return
	}
	b.ReportMetric(100*float64(decode)/float64(total), "decode-%")
	b.ReportMetric(100*float64(decode)/float64(recv), "decode-recv-%")
}

// stack is one sample's function names (innermost first) and its sample count.
type stack struct {
	funcs []string
	n     int64
}

func (s stack) has(names ...string) bool {
	for _, f := range s.funcs {
		for _, n := range names {
			if strings.HasSuffix(f, n) {
				return true
			}
		}
	}
	return false
}

// profileStacks reads a gzipped profile.proto (github.com/google/pprof/proto/profile.proto):
// samples (field 2: location ids, values), locations (4: id, lines with function ids),
// functions (5: id, name as a string table index) and the string table (6).
func profileStacks(gz []byte) ([]stack, error) {
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		return nil, err
	}
	type sample struct {
		locs []uint64
		n    int64
	}
	var samples []sample
	locFuncs := map[uint64][]uint64{} // location id -> function ids
	funcName := map[uint64]int64{}    // function id -> string index
	var strs []string
	err = fields(b, func(num protowire.Number, v []byte, _ uint64) error {
		switch num {
		case 2:
			var s sample
			var vals []uint64
			err := fields(v, func(num protowire.Number, v []byte, x uint64) error {
				switch num {
				case 1:
					s.locs = appendPacked(s.locs, v, x)
				case 2:
					vals = appendPacked(vals, v, x)
				}
				return nil
			})
			if len(vals) > 0 {
				s.n = int64(vals[0])
			}
			samples = append(samples, s)
			return err
		case 4:
			var id uint64
			var fns []uint64
			err := fields(v, func(num protowire.Number, v []byte, x uint64) error {
				switch num {
				case 1:
					id = x
				case 4:
					return fields(v, func(num protowire.Number, _ []byte, x uint64) error {
						if num == 1 {
							fns = append(fns, x)
						}
						return nil
					})
				}
				return nil
			})
			locFuncs[id] = fns
			return err
		case 5:
			var id uint64
			var name int64
			err := fields(v, func(num protowire.Number, _ []byte, x uint64) error {
				switch num {
				case 1:
					id = x
				case 2:
					name = int64(x)
				}
				return nil
			})
			funcName[id] = name
			return err
		case 6:
			strs = append(strs, string(v))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]stack, 0, len(samples))
	for _, s := range samples {
		st := stack{n: s.n}
		for _, l := range s.locs {
			for _, f := range locFuncs[l] {
				if i := funcName[f]; i >= 0 && int(i) < len(strs) {
					st.funcs = append(st.funcs, strs[i])
				}
			}
		}
		out = append(out, st)
	}
	return out, nil
}

// fields calls fn for each field of the message in b (payload of length-delimited fields,
// value of varints).
func fields(b []byte, fn func(num protowire.Number, v []byte, x uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		var v []byte
		var x uint64
		switch typ {
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
		if err := fn(num, v, x); err != nil {
			return err
		}
	}
	return nil
}

// appendPacked appends a repeated varint field, packed (v) or not (x).
func appendPacked(out []uint64, v []byte, x uint64) []uint64 {
	if v == nil {
		return append(out, x)
	}
	for len(v) > 0 {
		x, n := protowire.ConsumeVarint(v)
		if n < 0 {
			return out
		}
		out = append(out, x)
		v = v[n:]
	}
	return out
}
