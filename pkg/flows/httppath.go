package flows

import (
	"regexp"
	"strconv"
	"strings"
)

// SegmentKind says what one segment of an HTTP request path holds. It is decided in one place
// so that pkg/aggregate (which keeps one sample per path shape) and pkg/synth (which writes one
// rule per shape) agree on which paths are the same (issue 14: an API with IDs in its paths
// must not exhaust the samples kept per edge).
type SegmentKind uint8

const (
	// SegmentLiteral is matched as written.
	SegmentLiteral SegmentKind = iota
	// SegmentNumber is made of ASCII digits only.
	SegmentNumber
	// SegmentUUID is a UUID in its 8-4-4-4-12 hex form, either case.
	SegmentUUID
	// SegmentHex is a hex digest or object ID: 16 hex digits or more (md5, sha1, sha256; Mongo
	// ObjectIDs are 24), at least one of them a digit, so that words made of a-f stay literal.
	// Its length is part of its shape.
	SegmentHex
)

// hexMin is the shortest segment read as a digest.
const hexMin = 16

// grpcPath is a gRPC method, /package.Service/Method (gRPC over HTTP/2 always POSTs it).
var grpcPath = regexp.MustCompile(`^/[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*/[A-Za-z_][A-Za-z0-9_]*$`)

// IsGRPCPath reports whether a request is a gRPC call: a POST (any case) of a gRPC method
// path. Its path is never generalized.
func IsGRPCPath(method, path string) bool {
	return strings.EqualFold(method, "POST") && grpcPath.MatchString(path)
}

// PathSegmentKind classifies one path segment (the text between two slashes). The kinds are
// tried in the order they are declared: a segment of digits only is a number, even when it is
// long enough for a digest.
func PathSegmentKind(s string) SegmentKind {
	if s == "" {
		return SegmentLiteral
	}
	digits, hex := true, true
	for i := 0; i < len(s); i++ {
		c := s[i]
		isDigit := '0' <= c && c <= '9'
		digits = digits && isDigit
		hex = hex && (isDigit || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F')
	}
	switch {
	case digits:
		return SegmentNumber
	case isUUID(s):
		return SegmentUUID
	case hex && len(s) >= hexMin && strings.ContainsAny(s, "0123456789"):
		return SegmentHex
	}
	return SegmentLiteral
}

// isUUID reports whether s is 8-4-4-4-12 hex digits.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}

// HTTPPathShape returns the shape of a request path: each segment that is not a literal
// replaced by a placeholder for its kind, {int}, {uuid} or {hexN} (N digits), so that
// /api/orders/42 and /api/orders/43 have the shape /api/orders/{int}. A gRPC method path is
// its own shape. A literal segment that begins with '{' or '\' gets a leading '\', so no
// literal reads as a placeholder and two paths share a shape exactly when every segment has
// the same kind and every literal the same text. The path is taken as pkg/flows reports it,
// query string already dropped.
func HTTPPathShape(method, path string) string {
	if IsGRPCPath(method, path) {
		return path
	}
	if !needsShaping(path) {
		return path // the common case for paths without identifiers: no allocation
	}
	var b strings.Builder
	b.Grow(len(path))
	for i, s := range strings.Split(path, "/") {
		if i > 0 {
			b.WriteByte('/')
		}
		switch PathSegmentKind(s) {
		case SegmentNumber:
			b.WriteString("{int}")
		case SegmentUUID:
			b.WriteString("{uuid}")
		case SegmentHex:
			b.WriteString("{hex")
			b.WriteString(strconv.Itoa(len(s)))
			b.WriteByte('}')
		default:
			if strings.HasPrefix(s, "{") || strings.HasPrefix(s, `\`) {
				b.WriteByte('\\')
			}
			b.WriteString(s)
		}
	}
	return b.String()
}

// needsShaping reports whether some segment of path is not a literal written as is.
func needsShaping(path string) bool {
	for s := range strings.SplitSeq(path, "/") {
		if PathSegmentKind(s) != SegmentLiteral || strings.HasPrefix(s, "{") || strings.HasPrefix(s, `\`) {
			return true
		}
	}
	return false
}
