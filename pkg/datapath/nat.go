package datapath

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// NATDirection tells which way a NAT entry translates.
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

// NATEntries lists the NAT table.
func (m *Maps) NATEntries() ([]NATEntry, error) {
	var (
		key   hostNatKey
		value hostNatEntry
		out   []NATEntry
	)
	iter := m.natTable.Iterate()
	for iter.Next(&key, &value) {
		out = append(out, natEntryFromRaw(key, value))
	}
	if err := iter.Err(); err != nil {
		return nil, fmt.Errorf("list NAT entries: %w", err)
	}
	return out, nil
}

// NATCapacity returns the NAT table's size in entries.
func (m *Maps) NATCapacity() uint32 { return m.natTable.MaxEntries() }

// NATTimeouts are the idle times after which NAT entries expire, by flow state.
type NATTimeouts struct {
	TCPEstablished time.Duration
	TCPTransient   time.Duration // handshakes not completed, and closing or reset flows
	UDP            time.Duration
	ICMP           time.Duration
}

// DefaultNATTimeouts are close to netfilter conntrack's defaults.
var DefaultNATTimeouts = NATTimeouts{
	TCPEstablished: 2 * time.Hour,
	TCPTransient:   2 * time.Minute,
	UDP:            2 * time.Minute,
	ICMP:           30 * time.Second,
}

func (t NATTimeouts) forFlow(proto uint8, flags uint8) time.Duration {
	switch proto {
	case unix.IPPROTO_TCP:
		if flags&(tcpFIN|tcpRST) != 0 {
			return t.TCPTransient
		}
		return t.TCPEstablished
	case unix.IPPROTO_UDP:
		return t.UDP
	default:
		return t.ICMP
	}
}

func monotonicNow() time.Duration {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return time.Duration(ts.Nano())
}

// ExpireNAT deletes the flows idle for longer than their timeout and returns
// how many flows it removed. Both entries of a flow go together: the egress
// entry names the ingress one, and a flow is judged by the later of the two
// last-seen times.
func (m *Maps) ExpireNAT(timeouts NATTimeouts) (int, error) {
	entries := map[hostNatKey]hostNatEntry{}
	var (
		key   hostNatKey
		value hostNatEntry
	)
	iter := m.natTable.Iterate()
	for iter.Next(&key, &value) {
		entries[key] = value
	}
	if err := iter.Err(); err != nil {
		return 0, fmt.Errorf("list NAT entries: %w", err)
	}

	now := monotonicNow()
	removed := 0
	for key, out := range entries {
		if NATDirection(key.Dir) != NATEgress {
			continue
		}
		inKey := ingressKeyOf(key, out)
		in, hasIn := entries[inKey]
		last, flags := out.LastSeen, out.TcpFlags
		if hasIn {
			last = max(last, in.LastSeen)
			flags |= in.TcpFlags
		}
		if now-time.Duration(last) < timeouts.forFlow(key.Proto, flags) {
			continue
		}
		// The ingress entry goes first: without it no reply is translated, so
		// the egress entry is never left pointing at a port another flow took.
		if err := m.deleteNAT(inKey); err != nil {
			return removed, err
		}
		if err := m.deleteNAT(key); err != nil {
			return removed, err
		}
		delete(entries, inKey)
		removed++
	}

	// Ingress entries without an egress entry are leftovers of a failed claim.
	for key, in := range entries {
		if NATDirection(key.Dir) != NATIngress {
			continue
		}
		if _, ok := entries[egressKeyOf(key, in)]; ok {
			continue
		}
		if now-time.Duration(in.LastSeen) < timeouts.TCPTransient {
			continue
		}
		if err := m.deleteNAT(key); err != nil {
			return removed, err
		}
	}
	return removed, nil
}

func (m *Maps) deleteNAT(key hostNatKey) error {
	err := m.natTable.Delete(key)
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete NAT entry: %w", err)
	}
	return nil
}

// ingressKeyOf returns the key under which replies to the egress entry's flow arrive.
func ingressKeyOf(k hostNatKey, out hostNatEntry) hostNatKey {
	in := hostNatKey{Saddr: k.Daddr, Daddr: out.Addr, Proto: k.Proto, Dir: uint8(NATIngress)}
	if k.Proto == unix.IPPROTO_ICMP {
		in.Dport = out.Port
	} else {
		in.Sport = k.Dport
		in.Dport = out.Port
	}
	return in
}

// egressKeyOf returns the egress key of the flow an ingress entry translates back.
func egressKeyOf(k hostNatKey, in hostNatEntry) hostNatKey {
	out := hostNatKey{Saddr: in.Addr, Daddr: k.Saddr, Sport: in.Port, Proto: k.Proto,
		Dir: uint8(NATEgress)}
	if k.Proto != unix.IPPROTO_ICMP {
		out.Dport = k.Sport
	}
	return out
}
