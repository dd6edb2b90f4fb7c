package podrun

import (
	"errors"
	"net/netip"
	"sync"
)

// The ranges the runtime gives addresses from: the i-th pod served by this
// process listens on LoopbackCIDR's i-th address and has PodCIDR's i-th
// address as its pod IP.
const (
	// LoopbackCIDR holds the addresses the servers listen on.
	LoopbackCIDR = "127.2.0.0/16"
	// PodCIDR holds the pod IPs. It is outside 127.0.0.0/8, which the API
	// server refuses in EndpointSlices, and outside cluster.KwokPodCIDR.
	PodCIDR = "10.241.0.0/16"
)

// errAddressesExhausted is returned once every address of the ranges has
// been given out.
var errAddressesExhausted = errors.New("every address of " + LoopbackCIDR + " has been given out")

// addresses is shared by every Runtime of the process, so that no two pods,
// even of two runtimes one after the other, are ever given the same
// address: a loopback address is a resource of the whole process, not of
// one runtime.
var addresses = &allocator{
	loopback: netip.MustParsePrefix(LoopbackCIDR),
	pod:      netip.MustParsePrefix(PodCIDR),
}

// allocator hands out each index of its ranges once, from 1 up.
type allocator struct {
	loopback, pod netip.Prefix

	mu   sync.Mutex
	last uint32
}

// next returns a loopback address and a pod IP never returned before.
func (a *allocator) next() (loopback, pod netip.Addr, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	size := uint32(1) << (32 - a.loopback.Bits())
	if a.last+1 >= size-1 {
		return netip.Addr{}, netip.Addr{}, errAddressesExhausted
	}
	a.last++
	return nth(a.loopback, a.last), nth(a.pod, a.last), nil
}

// nth is the i-th address of an IPv4 prefix.
func nth(p netip.Prefix, i uint32) netip.Addr {
	b := p.Masked().Addr().As4()
	n := (uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])) + i
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
}
