package flows

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/protobuf/encoding/protojson"
)

// MaxLineBytes bounds one recorded line; a longer line is reported as malformed.
const MaxLineBytes = 16 << 20

// LineError locates a record that could not be decoded.
type LineError struct {
	File string
	Line int
	Err  error
}

func (e *LineError) Error() string { return fmt.Sprintf("%s:%d: %v", e.File, e.Line, e.Err) }
func (e *LineError) Unwrap() error { return e.Err }

// FileConfig configures a FileSource.
type FileConfig struct {
	// Paths are read in order; "-" is standard input; a directory stands for its recordings
	// (*.jsonl, *.json and their .gz forms) in name order. Gzip is recognized by content.
	Paths []string
	// Strict makes the first malformed line a fatal error instead of a counted, logged skip.
	Strict bool
	// Stdin replaces os.Stdin for "-" (tests).
	Stdin io.Reader
}

// Validate checks the configuration before anything is opened.
func (c *FileConfig) Validate() error {
	if len(c.Paths) == 0 {
		return errors.New("no flow files given")
	}
	stdin := 0
	for _, p := range c.Paths {
		if p == "" {
			return errors.New("empty flow file path")
		}
		if p == "-" {
			stdin++
		}
	}
	if stdin > 1 {
		return errors.New(`"-" (stdin) given more than once`)
	}
	return nil
}

// FileSource reads recorded flows as written by `hubble observe -o jsonpb` (or `-o json`):
// one GetFlowsResponse JSON object per line, plain or gzip-compressed. Lines holding a bare
// Flow object are accepted too. It implements Source; Recv returns io.EOF after the last file.
type FileSource struct {
	cfg   FileConfig
	norm  *Normalizer
	log   *slog.Logger
	stats Stats

	idx    int // index into cfg.Paths of the file being read
	name   string
	line   int
	closer io.Closer
	r      *bufio.Reader
	// plain counts the bytes read from the current file when it can be resumed (offset.go);
	// resume holds the marks ResumeFrom was given, by absolute path.
	plain     *countingFile
	resume    map[string]FileMark
	skipUntil time.Time
	replayed  bool // the record Recv returned last is in the run after a resume mark

	strict  protojson.UnmarshalOptions
	lenient protojson.UnmarshalOptions
}

// NewFileSource returns a FileSource; files are opened lazily, in order.
func NewFileSource(cfg FileConfig, norm *Normalizer, log *slog.Logger) (*FileSource, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if norm == nil {
		norm = NewNormalizer(nil)
	}
	if cfg.Stdin == nil {
		cfg.Stdin = os.Stdin
	}
	paths, err := expandPaths(cfg.Paths)
	if err != nil {
		return nil, err
	}
	cfg.Paths = paths
	return &FileSource{
		cfg: cfg, norm: norm, log: log, idx: -1,
		lenient: protojson.UnmarshalOptions{DiscardUnknown: true},
	}, nil
}

// recordingExts are the file names a directory argument expands to.
var recordingExts = []string{".jsonl", ".json", ".jsonl.gz", ".json.gz"}

// expandPaths replaces each directory by the recordings it holds, sorted by name.
func expandPaths(paths []string) ([]string, error) {
	var out []string
	for _, p := range paths {
		if p == "-" {
			out = append(out, p)
			continue
		}
		fi, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("open flow file: %w", err)
		}
		if !fi.IsDir() {
			out = append(out, p)
			continue
		}
		entries, err := os.ReadDir(p)
		if err != nil {
			return nil, fmt.Errorf("read flow directory: %w", err)
		}
		n := 0
		for _, e := range entries { // ReadDir sorts by name
			if e.Type().IsRegular() && slices.ContainsFunc(recordingExts, func(ext string) bool { return strings.HasSuffix(e.Name(), ext) }) {
				out = append(out, filepath.Join(p, e.Name()))
				n++
			}
		}
		if n == 0 {
			return nil, fmt.Errorf("flow directory %s holds no recordings (%s)", p, strings.Join(recordingExts, ", "))
		}
	}
	return out, nil
}

// Stats returns the source's counters.
func (s *FileSource) Stats() *Stats { return &s.stats }

// Close closes the file being read.
func (s *FileSource) Close() error {
	if s.closer != nil {
		err := s.closer.Close()
		s.closer = nil
		return err
	}
	return nil
}

// Recv returns the next event, skipping replies and non-flow records.
func (s *FileSource) Recv(ctx context.Context) (*Event, error) {
	for {
		resp, err := s.RecvResponse(ctx)
		if err != nil {
			return nil, err
		}
		ev, skip := s.norm.Response(resp)
		if skip != SkipNone {
			s.stats.Skipped.Add(1)
			continue
		}
		s.replayed = s.resumed(ev)
		if ev.Kind == KindLost {
			s.stats.Lost.Add(ev.Lost.Count)
		}
		s.stats.Events.Add(1)
		return ev, nil
	}
}

// RecvResponse returns the next decoded record, before normalization (the replay relay
// serves these as they are).
func (s *FileSource) RecvResponse(ctx context.Context) (*observerpb.GetFlowsResponse, error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if s.r == nil {
			if err := s.next(); err != nil {
				return nil, err
			}
		}
		line, err := s.readLine()
		if err != nil {
			if errors.Is(err, io.EOF) {
				s.Close()
				s.r = nil
				continue
			}
			return nil, err
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		resp, err := s.decode(line)
		if err != nil {
			lerr := &LineError{File: s.name, Line: s.line, Err: err}
			s.stats.Malformed.Add(1)
			if s.cfg.Strict {
				return nil, lerr
			}
			if s.log != nil {
				s.log.Warn("skipping malformed flow record", "path", s.name, "line", s.line, "err", err)
			}
			continue
		}
		return resp, nil
	}
}

// next opens the next file, detecting gzip by its magic bytes.
func (s *FileSource) next() error {
	s.idx++
	if s.idx >= len(s.cfg.Paths) {
		return io.EOF
	}
	p := s.cfg.Paths[s.idx]
	s.name, s.line, s.plain = p, 0, nil
	var rc io.ReadCloser
	if p == "-" {
		s.name = "<stdin>"
		rc = io.NopCloser(s.cfg.Stdin)
	} else {
		f, err := os.Open(p)
		if err != nil {
			return fmt.Errorf("open flow file: %w", err)
		}
		if rc, err = s.openPlain(f, p); err != nil {
			f.Close()
			return err
		}
	}
	br := bufio.NewReaderSize(rc, 256<<10)
	magic, _ := br.Peek(2)
	if len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			rc.Close()
			return fmt.Errorf("%s: gzip: %w", s.name, err)
		}
		s.closer, s.plain = multiCloser{zr, rc}, nil
		s.r = bufio.NewReaderSize(zr, 256<<10)
		return nil
	}
	s.closer = rc
	s.r = br
	return nil
}

type multiCloser []io.Closer

func (m multiCloser) Close() error {
	var errs []error
	for _, c := range m {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

// readLine returns the next line without its newline. A final line without newline is
// returned as a line; read errors (a truncated or corrupt gzip stream) name the place. A line
// longer than MaxLineBytes is counted as malformed and skipped (an error with Strict).
func (s *FileSource) readLine() ([]byte, error) {
	var long []byte
	for {
		chunk, err := s.r.ReadSlice('\n')
		switch {
		case err == nil, errors.Is(err, io.EOF):
			if err != nil && len(chunk) == 0 && long == nil {
				return nil, io.EOF
			}
			s.line++
			line := chunk
			if long != nil {
				line = append(long, chunk...)
			}
			if len(bytes.TrimSuffix(line, []byte{'\n'})) > MaxLineBytes {
				if err := s.tooLong(); err != nil {
					return nil, err
				}
				long = nil
				continue
			}
			return line, nil
		case errors.Is(err, bufio.ErrBufferFull):
			long = append(long, chunk...)
			if len(long) > MaxLineBytes {
				s.line++
				if err := s.tooLong(); err != nil {
					return nil, err
				}
				if err := s.skipLine(); err != nil {
					return nil, err
				}
				long = nil
			}
		default:
			return nil, fmt.Errorf("%s:%d: read: %w", s.name, s.line+1, err)
		}
	}
}

// tooLong accounts the current line as malformed for its length.
func (s *FileSource) tooLong() error {
	s.stats.Malformed.Add(1)
	lerr := &LineError{File: s.name, Line: s.line, Err: fmt.Errorf("line longer than %d bytes", MaxLineBytes)}
	if s.cfg.Strict {
		return lerr
	}
	if s.log != nil {
		s.log.Warn("skipping malformed flow record", "path", s.name, "line", s.line, "err", lerr.Err)
	}
	return nil
}

func (s *FileSource) skipLine() error {
	for {
		_, err := s.r.ReadSlice('\n')
		if err == nil || errors.Is(err, io.EOF) {
			return nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return fmt.Errorf("%s:%d: read: %w", s.name, s.line, err)
		}
	}
}

// decode parses one line as hubble does: strictly first, then ignoring fields unknown to this
// version of the API (recordings from newer Hubble releases). A line holding a bare Flow is
// wrapped into a response.
func (s *FileSource) decode(line []byte) (*observerpb.GetFlowsResponse, error) {
	return DecodeLine(line, s.strict, s.lenient)
}

// DecodeLine parses one recorded line. Exported for the fuzz target and the replay relay.
func DecodeLine(line []byte, strict, lenient protojson.UnmarshalOptions) (*observerpb.GetFlowsResponse, error) {
	if len(line) == 0 || line[0] != '{' {
		return nil, errors.New("not a JSON object")
	}
	resp := &observerpb.GetFlowsResponse{}
	err := strict.Unmarshal(line, resp)
	if err != nil {
		// A newer Hubble may send fields or enum values this version does not know.
		resp.Reset()
		err = lenient.Unmarshal(line, resp)
	}
	if err == nil && resp.GetResponseTypes() != nil {
		return resp, nil
	}
	// Some tools write the bare flow object.
	f := &flowpb.Flow{}
	if ferr := lenient.Unmarshal(line, f); ferr == nil && f.GetTime() != nil && (f.GetSource() != nil || f.GetIP() != nil) {
		return &observerpb.GetFlowsResponse{
			ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: f},
			NodeName:      f.GetNodeName(),
			Time:          f.GetTime(),
		}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("decode flow: %w", err)
	}
	return nil, errors.New("decode flow: no flow, lost-events or node-status record in object")
}
