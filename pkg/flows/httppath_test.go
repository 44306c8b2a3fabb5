package flows

import (
	"strings"
	"testing"
)

// Ensure identifiers in path segments are replaced by the placeholder of their kind and
// everything else (words made of a-f, short hex, gRPC methods) stays as written.
func TestHTTPPathShape(t *testing.T) {
	const (
		uuid   = "3f2a9c1e-7b4d-4e8a-9c2f-1a2b3c4d5e6f"
		sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	)
	for _, tc := range []struct {
		name, method, path, want string
	}{
		{"root", "GET", "/", "/"},
		{"literal path unchanged", "GET", "/api/orders", "/api/orders"},
		{"numeric id", "GET", "/api/orders/42", "/api/orders/{int}"},
		{"ids in two segments", "PUT", "/api/orders/42/items/7", "/api/orders/{int}/items/{int}"},
		{"uuid, either case", "GET", "/carts/" + strings.ToUpper(uuid), "/carts/{uuid}"},
		{"digest keeps its length", "GET", "/blobs/" + sha256, "/blobs/{hex64}"},
		{"object id", "GET", "/feed/5f8d0d55b54764421b7156c9", "/feed/{hex24}"},
		{"long number is a number", "GET", "/n/12345678901234567890", "/n/{int}"},
		{"word of a-f stays literal", "GET", "/feed/deadbeefdeadbeefcafe", "/feed/deadbeefdeadbeefcafe"},
		{"short hex stays literal", "GET", "/commits/abc123", "/commits/abc123"},
		{"mixed segment stays literal", "GET", "/users/u42", "/users/u42"},
		{"trailing slash kept", "GET", "/api/orders/42/", "/api/orders/{int}/"},
		{"grpc method exact", "POST", "/hipstershop.CartService/GetCart", "/hipstershop.CartService/GetCart"},
		{"grpc needs POST", "GET", "/pkg.Svc/deadbeefdeadbeef1234", "/pkg.Svc/{hex20}"},
		{"grpc method that looks like a digest", "post", "/pkg.Svc/deadbeefdeadbeef1234", "/pkg.Svc/deadbeefdeadbeef1234"},
		{"literal that reads as a placeholder is escaped", "GET", "/a/{int}", `/a/\{int}`},
		{"literal backslash is escaped", "GET", `/a/\{int}`, `/a/\\{int}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := HTTPPathShape(tc.method, tc.path); got != tc.want {
				t.Errorf("HTTPPathShape(%q, %q) = %q, want %q", tc.method, tc.path, got, tc.want)
			}
		})
	}
}

// Ensure paths that differ in a segment's kind or a literal's text never share a shape: a
// literal never reads as a placeholder, and digests of two lengths stay apart.
func TestHTTPPathShapeDistinct(t *testing.T) {
	paths := []string{"/a/42", "/a/{int}", `/a/\{int}`, "/a/x", "/a/" + strings.Repeat("0f", 8), "/a/" + strings.Repeat("0f", 9)}
	seen := map[string]string{}
	for _, p := range paths {
		s := HTTPPathShape("GET", p)
		if other, ok := seen[s]; ok {
			t.Errorf("HTTPPathShape(%q) = HTTPPathShape(%q) = %q, want distinct shapes", p, other, s)
		}
		seen[s] = p
	}
}

// Ensure the segment kinds follow their documented order and bounds.
func TestPathSegmentKind(t *testing.T) {
	for _, tc := range []struct {
		seg  string
		want SegmentKind
	}{
		{"", SegmentLiteral},
		{"0", SegmentNumber},
		{"0123456789abcdef", SegmentHex},
		{"0123456789abcde", SegmentLiteral}, // 15 digits
		{"abcdefabcdefabcdef", SegmentLiteral},
		{"3f2a9c1e-7b4d-4e8a-9c2f-1a2b3c4d5e6f", SegmentUUID},
		{"3f2a9c1e-7b4d-4e8a-9c2f-1a2b3c4d5e6", SegmentLiteral},
		{"3f2a9c1e_7b4d-4e8a-9c2f-1a2b3c4d5e6f", SegmentLiteral},
		{"3f2a9c1e-7b4d-4e8a-9c2f-1a2b3c4d5e6g", SegmentLiteral},
		{"١٢", SegmentLiteral}, // Arabic-Indic digits are not ASCII digits
	} {
		if got := PathSegmentKind(tc.seg); got != tc.want {
			t.Errorf("PathSegmentKind(%q) = %d, want %d", tc.seg, got, tc.want)
		}
	}
}
