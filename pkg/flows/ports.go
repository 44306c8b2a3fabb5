package flows

import "math"

// port16 narrows a port from Hubble's 32-bit field. A value above 65535 is no port; it becomes
// 0, which no TCP, UDP or SCTP server listens on and which the aggregate rejects as malformed,
// instead of wrapping (70000 would become 4464, a port never observed; issue 15.3).
func port16(v uint32) uint16 {
	if v > math.MaxUint16 {
		return 0
	}
	return uint16(v)
}

// icmpType16 narrows an ICMP type, saturating: any value above 255 is malformed and must stay
// above 255 (wrapping could turn it into 8, an echo request).
func icmpType16(v uint32) uint16 {
	return uint16(min(v, math.MaxUint16))
}
