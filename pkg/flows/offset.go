package flows

import (
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"path/filepath"
	"time"
)

// A restarted `ingest --flows` used to re-read every file from its start and let the resume
// cursor drop what the store held: past 72k stored flows that took over 40 s, so a process
// restarted more often than that never progressed (issue 15.7). A FileMark records how far a
// plain file was read, with enough of its content to tell the same file from another one at the
// same path, and FileSource.ResumeFrom seeks there. The cursor still drops what was applied
// after the mark, so a mark that trails the real position costs re-reading, never counts twice.

// FilePos is where a FileSource stands: just past the last record it returned, in a plain
// (seekable, uncompressed) file.
type FilePos struct {
	Path   string // as given, made absolute
	Offset int64  // bytes of the file consumed by the records returned so far
	Line   int    // lines consumed
}

// FileMark is a FilePos with the identity of the file it was taken in.
type FileMark struct {
	FilePos
	// Time is the flow time of the record just before the mark. The records right after the
	// mark up to Time+FoldWindow may be second observations of connections whose first lies
	// before it. They were applied or folded by the read that took the mark, so a resumed read
	// replays them (Replayed): the Folder learns them, to fold their own second observations,
	// and delivers none of them.
	Time time.Time
	// Head is a hash of the file's first identBytes and Tail of the identBytes before Offset:
	// a file replaced, rewritten or truncated under the same name fails the match.
	Head, Tail uint64
}

// Positioner is a Source that can say how far it read (FileSource, and a Folder around one).
type Positioner interface {
	Position() (FilePos, bool)
}

// identBytes is how much of a file a FileMark hashes at each end.
const identBytes = 4096

// ErrMarkMismatch is returned by CheckMark when the file at the mark's path is not the one it
// was taken in.
var ErrMarkMismatch = errors.New("file changed since it was read")

// Mark takes a FileMark at pos, reading the few bytes its identity needs.
func Mark(pos FilePos) (FileMark, error) {
	f, err := os.Open(pos.Path)
	if err != nil {
		return FileMark{}, fmt.Errorf("mark %s: %w", pos.Path, err)
	}
	defer f.Close()
	head, tail, err := identity(f, pos.Offset)
	if err != nil {
		return FileMark{}, fmt.Errorf("mark %s: %w", pos.Path, err)
	}
	return FileMark{FilePos: pos, Head: head, Tail: tail}, nil
}

// CheckMark reports whether f is the file m was taken in, read at least up to m.Offset.
func CheckMark(f *os.File, m FileMark) error {
	head, tail, err := identity(f, m.Offset)
	if err != nil {
		return err
	}
	if head != m.Head || tail != m.Tail {
		return ErrMarkMismatch
	}
	return nil
}

func identity(f *os.File, offset int64) (head, tail uint64, err error) {
	st, err := f.Stat()
	if err != nil {
		return 0, 0, err
	}
	if !st.Mode().IsRegular() || st.Size() < offset {
		return 0, 0, ErrMarkMismatch
	}
	hash := func(off, n int64) (uint64, error) {
		h := fnv.New64a()
		if _, err := io.Copy(h, io.NewSectionReader(f, off, n)); err != nil {
			return 0, err
		}
		return h.Sum64(), nil
	}
	if head, err = hash(0, min(identBytes, offset)); err != nil {
		return 0, 0, err
	}
	start := max(0, offset-identBytes)
	if tail, err = hash(start, offset-start); err != nil {
		return 0, 0, err
	}
	return head, tail, nil
}

// ResumeFrom makes the source start each file that has a mark at the mark, when the file is
// still the one the mark was taken in; other files are read from their start. Call before the
// first Recv.
func (s *FileSource) ResumeFrom(marks []FileMark) {
	s.resume = make(map[string]FileMark, len(marks))
	for _, m := range marks {
		s.resume[m.Path] = m
	}
}

// Position returns how far the source read in the current file; false for standard input,
// gzip and before the first record.
func (s *FileSource) Position() (FilePos, bool) {
	if s.plain == nil || s.r == nil {
		return FilePos{}, false
	}
	return FilePos{Path: s.plain.path, Offset: s.plain.n - int64(s.r.Buffered()), Line: s.line}, true
}

// Replayed reports whether the record Recv returned last was accounted for by the read that
// took the resume mark (FileMark.Time): a Folder learns it and does not deliver it.
func (s *FileSource) Replayed() bool { return s.replayed }

// resumed reports whether ev is in the run of records right after a resume mark that the
// previous read already accounted for (FileMark.Time); the run ends at the first later record.
func (s *FileSource) resumed(ev *Event) bool {
	if s.skipUntil.IsZero() {
		return false
	}
	if ev.Time.After(s.skipUntil) {
		s.skipUntil = time.Time{}
		return false
	}
	return true
}

// countingFile counts the bytes read from a plain file, so that Position can subtract what
// the bufio.Reader above it holds unread.
type countingFile struct {
	*os.File
	path string
	n    int64
}

func (c *countingFile) Read(p []byte) (int, error) {
	n, err := c.File.Read(p)
	c.n += int64(n)
	return n, err
}

// openPlain prepares a file for Position and, when a mark for it matches, seeks to the mark.
func (s *FileSource) openPlain(f *os.File, p string) (io.ReadCloser, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		abs = p
	}
	c := &countingFile{File: f, path: abs}
	s.plain = c
	m, ok := s.resume[abs]
	if !ok || m.Offset == 0 {
		return c, nil
	}
	if err := CheckMark(f, m); err != nil {
		if s.log != nil {
			s.log.Info("flow file changed since the store's mark: reading it from the start", "path", p, "err", err)
		}
		return c, nil
	}
	if _, err := f.Seek(m.Offset, io.SeekStart); err != nil {
		return nil, fmt.Errorf("%s: seek to resume mark: %w", p, err)
	}
	c.n, s.line, s.skipUntil = m.Offset, m.Line, m.Time.Add(FoldWindow)
	if s.log != nil {
		s.log.Info("resuming flow file at the store's mark", "path", p, "line", m.Line, "offset", m.Offset)
	}
	return c, nil
}
