package datapath

import (
	"net/netip"
	"time"
)

// NATDirection is the way a NAT entry translates.
type NATDirection uint8

// Directions of NAT entries, as enum nat_dir in headers/ferry.h.
const (
	NATEgress  NATDirection = 0 // pod address and port to the node's
	NATIngress NATDirection = 1 // node address and port back to the pod's
)

func (d NATDirection) String() string {
	if d == NATIngress {
		return "ingress"
	}
	return "egress"
}

// TCP flags that NAT entries record.
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
)

// NATEntry is one direction of a masqueraded flow. For ICMP echo the
// identifier takes the place of the source port (egress) or of the
// destination port (ingress).
type NATEntry struct {
	Proto       uint8
	Direction   NATDirection
	Src, Dst    netip.AddrPort
	TranslateTo netip.AddrPort
	TCPFlags    uint8
	Created     time.Duration // monotonic clock (CLOCK_MONOTONIC) at creation
	LastSeen    time.Duration // monotonic clock of the last packet
}

func natEntryFromRaw(k hostNatKey, v hostNatEntry) NATEntry {
	return NATEntry{
		Proto:       k.Proto,
		Direction:   NATDirection(k.Dir),
		Src:         netip.AddrPortFrom(addrFromBE32(k.Saddr), be16(k.Sport)),
		Dst:         netip.AddrPortFrom(addrFromBE32(k.Daddr), be16(k.Dport)),
		TranslateTo: netip.AddrPortFrom(addrFromBE32(v.Addr), be16(v.Port)),
		TCPFlags:    v.TcpFlags,
		Created:     time.Duration(v.Created),
		LastSeen:    time.Duration(v.LastSeen),
	}
}

// NATEntries lists the NAT table, two entries per flow.
func (m *Maps) NATEntries() ([]NATEntry, error) {
	entries, err := m.readNAT()
	if err != nil {
		return nil, err
	}
	out := make([]NATEntry, 0, len(entries))
	for key, value := range entries {
		out = append(out, natEntryFromRaw(key, value))
	}
	return out, nil
}

// NATCapacity returns the NAT table's size in entries.
func (m *Maps) NATCapacity() uint32 { return m.natTable.MaxEntries() }
