package flows

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
)

// FuzzDecodeLine feeds arbitrary lines through DecodeLine and the Normalizer: neither may
// panic, and a decoded line either normalizes or is skipped with a reason. Seeded with real
// lines of every shape in the recordings.
func FuzzDecodeLine(f *testing.F) {
	for _, s := range []string{lineSYN, lineLost, lineBareFlow, "{}", "{", `{"flow":{}}`, `{"flow":{"l7":{"dns":{}},"event_type":{"type":129}}}`} {
		f.Add([]byte(s))
	}
	// One line of each record kind (event type, L7 or not) from every recording.
	matches, _ := filepath.Glob(filepath.Join(recordings, "*.jsonl"))
	for _, p := range matches {
		file, err := os.Open(p)
		if err != nil {
			f.Fatal(err)
		}
		seen := map[string]bool{}
		sc := bufio.NewScanner(file)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			resp, err := DecodeLine(line, protojson.UnmarshalOptions{}, protojson.UnmarshalOptions{DiscardUnknown: true})
			if err != nil {
				f.Fatalf("%s: %v", p, err)
			}
			kind := resp.GetFlow().GetEventType().String() + resp.GetFlow().GetL7().GetType().String() + resp.GetFlow().GetVerdict().String()
			if !seen[kind] {
				seen[kind] = true
				f.Add(append([]byte(nil), line...))
			}
		}
		file.Close()
	}
	strict, lenient := protojson.UnmarshalOptions{}, protojson.UnmarshalOptions{DiscardUnknown: true}
	n := NewNormalizer(nil)
	f.Fuzz(func(t *testing.T, line []byte) {
		resp, err := DecodeLine(line, strict, lenient)
		if err != nil {
			if resp != nil {
				t.Errorf("DecodeLine returned a response with error %v", err)
			}
			return
		}
		ev, skip := n.Response(resp)
		if (ev == nil) == (skip == SkipNone) {
			t.Errorf("Response() = %v, %q: want an event xor a skip reason", ev, skip)
		}
		if ev != nil && ev.Kind == KindFlow {
			_ = ev.Src.Key() + ev.Dst.String() + ev.PortString()
		}
	})
}

// FuzzFileSource feeds arbitrary files through FileSource and the Folder: no panic, every
// record is accounted for (an event, a skip with a reason, or malformed), and a file is
// refused only when nothing in it was readable. Seeded with every shape in testdata/shapes.
func FuzzFileSource(f *testing.F) {
	matches, _ := filepath.Glob(filepath.Join(shapes, "*"))
	for _, p := range matches {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("{\n\"flow\": {\n{\"flow\":{}}\n}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		src, err := NewFileSource(FileConfig{Paths: []string{"-"}, Stdin: bytes.NewReader(data)}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		folder := NewFolder(src, src.Stats())
		delivered := uint64(0)
		for {
			_, err := folder.Recv(t.Context())
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				sum := src.Stats().Snapshot()
				if sum.Events+sum.Skipped != 0 || sum.Malformed == 0 || !strings.Contains(err.Error(), "no readable flow record") {
					t.Fatalf("error %v after %s: want it only when nothing was readable", err, sum)
				}
				return
			}
			delivered++
		}
		sum := src.Stats().Snapshot()
		var byReason uint64
		for _, n := range sum.SkippedBy {
			byReason += n
		}
		if byReason != sum.Skipped || delivered > sum.Events {
			t.Fatalf("summary %s, %d delivered: skips by reason must add up, deliveries stay within events", sum, delivered)
		}
	})
}
