package datapath

import (
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// NATState is the state of a masqueraded flow, which decides its timeout.
type NATState uint8

// States of masqueraded flows. TCP flows move from handshake to established
// when the remote end replies to the SYN, and to closing on a FIN or RST from
// either end. UDP and ICMP echo flows count as replied once a packet came
// back.
const (
	NATTCPHandshake NATState = iota
	NATTCPEstablished
	NATTCPClosing
	NATUnreplied
	NATReplied
)

func (s NATState) String() string {
	switch s {
	case NATTCPHandshake:
		return "handshake"
	case NATTCPEstablished:
		return "established"
	case NATTCPClosing:
		return "closing"
	case NATUnreplied:
		return "unreplied"
	case NATReplied:
		return "replied"
	}
	return "unknown"
}

// NATTuple is one direction's source and destination. For ICMP echo the
// source port is the echo identifier and the destination port is zero.
type NATTuple struct {
	Src, Dst netip.AddrPort
}

// NATFlow is a masqueraded flow: the pair of NAT entries that translate it
// in both directions.
type NATFlow struct {
	Proto uint8
	// Original is the flow as the pod, or the node for a node flow that was
	// moved to another port, sent it.
	Original NATTuple
	// Translated is the flow as it leaves the node.
	Translated NATTuple
	State      NATState
	Created    time.Duration // monotonic clock (CLOCK_MONOTONIC) at creation
	LastSeen   time.Duration // monotonic clock of the last packet in either direction
	// Paired is false when the flow's ingress entry is missing, so that no
	// reply is translated.
	Paired bool
}

// NATTimeouts are the idle times after which NAT flows expire, by state.
type NATTimeouts struct {
	TCPHandshake   time.Duration
	TCPEstablished time.Duration
	TCPClosing     time.Duration // after a FIN or RST from either end
	UDP            time.Duration
	ICMP           time.Duration
}

// DefaultNATTimeouts are the timeouts that ferryd uses unless configured.
// Established TCP flows outlive Linux's default keepalive time of 2 hours, as
// RFC 5382 requires of a NAT (at least 2 h 4 min). UDP flows last the 2
// minutes that RFC 4787 asks for. Closing flows outlive the 60 s TIME_WAIT
// of Linux.
var DefaultNATTimeouts = NATTimeouts{
	TCPHandshake:   time.Minute,
	TCPEstablished: 6 * time.Hour,
	TCPClosing:     2 * time.Minute,
	UDP:            2 * time.Minute,
	ICMP:           30 * time.Second,
}

// Timeout returns the idle time after which a flow of proto in state s expires.
func (t NATTimeouts) Timeout(proto uint8, s NATState) time.Duration {
	switch {
	case proto == unix.IPPROTO_TCP && s == NATTCPHandshake:
		return t.TCPHandshake
	case proto == unix.IPPROTO_TCP && s == NATTCPClosing:
		return t.TCPClosing
	case proto == unix.IPPROTO_TCP:
		return t.TCPEstablished
	case proto == unix.IPPROTO_UDP:
		return t.UDP
	default:
		return t.ICMP
	}
}

// flowState derives a flow's state from its entries. hasIn is false for a
// flow without ingress entry, which then counts as unanswered.
func flowState(proto uint8, out, in hostNatEntry, hasIn bool) NATState {
	if proto == unix.IPPROTO_TCP {
		flags := out.TcpFlags
		if hasIn {
			flags |= in.TcpFlags
		}
		switch {
		case flags&(tcpFIN|tcpRST) != 0:
			return NATTCPClosing
		case hasIn && in.TcpFlags&tcpSYN != 0:
			return NATTCPEstablished
		default:
			return NATTCPHandshake
		}
	}
	// The ingress entry starts with last_seen equal to created; a reply moves it.
	if hasIn && in.LastSeen > in.Created {
		return NATReplied
	}
	return NATUnreplied
}

// natSnapshot is the NAT table read in one pass.
type natSnapshot map[hostNatKey]hostNatEntry

func (m *Maps) readNAT() (natSnapshot, error) {
	entries := natSnapshot{}
	var (
		key   hostNatKey
		value hostNatEntry
	)
	iter := m.natTable.Iterate()
	for iter.Next(&key, &value) {
		entries[key] = value
	}
	if err := iter.Err(); err != nil {
		return nil, fmt.Errorf("list NAT entries: %w", err)
	}
	return entries, nil
}

// flow builds the flow of an egress entry from the snapshot.
func (s natSnapshot) flow(key hostNatKey, out hostNatEntry) NATFlow {
	inKey := ingressKeyOf(key, out)
	in, hasIn := s[inKey]
	f := NATFlow{
		Proto: key.Proto,
		Original: NATTuple{
			Src: netip.AddrPortFrom(addrFromBE32(key.Saddr), be16(key.Sport)),
			Dst: netip.AddrPortFrom(addrFromBE32(key.Daddr), be16(key.Dport)),
		},
		Translated: NATTuple{
			Src: netip.AddrPortFrom(addrFromBE32(out.Addr), be16(out.Port)),
			Dst: netip.AddrPortFrom(addrFromBE32(key.Daddr), be16(key.Dport)),
		},
		State:    flowState(key.Proto, out, in, hasIn),
		Created:  time.Duration(out.Created),
		LastSeen: time.Duration(out.LastSeen),
		Paired:   hasIn,
	}
	if hasIn {
		f.LastSeen = max(f.LastSeen, time.Duration(in.LastSeen))
	}
	return f
}

// NATFlows lists the masqueraded flows, one per egress entry.
func (m *Maps) NATFlows() ([]NATFlow, error) {
	entries, err := m.readNAT()
	if err != nil {
		return nil, err
	}
	var out []NATFlow
	for key, value := range entries {
		if NATDirection(key.Dir) == NATEgress {
			out = append(out, entries.flow(key, value))
		}
	}
	return out, nil
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

func monotonicNow() time.Duration {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return time.Duration(ts.Nano())
}
