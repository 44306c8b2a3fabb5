package flows

// Receiving reports whether a Recv of s is under way, past the watch of its context
// (TestRelayRecvContextPerCall waits for it before it ends the context).
func (s *RelaySource) Receiving() bool {
	s.streamMu.Lock()
	defer s.streamMu.Unlock()
	return s.receiving != nil
}
