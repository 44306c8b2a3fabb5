package replay

import (
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
)

// rawMessage is a GetFlowsResponse marshaled in advance. Recorded flows are marshaled once
// at load and sent as bytes, so the load generator spends its CPU on the network, not on
// re-encoding the same records for every stream.
type rawMessage []byte

// rawCodec is grpc's proto codec that passes rawMessage through unchanged. Clients see
// ordinary protobuf; the content-subtype stays "proto".
type rawCodec struct{}

var protoCodec = encoding.GetCodecV2(proto.Name)

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	if r, ok := v.(rawMessage); ok {
		return mem.BufferSlice{mem.SliceBuffer(r)}, nil
	}
	return protoCodec.Marshal(v)
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error { return protoCodec.Unmarshal(data, v) }

func (rawCodec) Name() string { return proto.Name }
