package datapath

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
)

// Flags of the node settings, mirrored from headers/ferry.h.
const (
	flagMasquerade   = 1 << 0
	flagPodClsact    = 1 << 1
	flagUplinkClsact = 1 << 2
)

// Endpoint is a pod on this node as the programs see it.
type Endpoint struct {
	IP      netip.Addr
	IfIndex int              // host side of the pod's veth
	PodMAC  net.HardwareAddr // the pod's interface
	HostMAC net.HardwareAddr // the host side, which replies to ARP for the pod's gateway
}

// NodeRoute maps a remote node's pod range to the node's IP.
type NodeRoute struct {
	PodCIDR netip.Prefix
	NodeIP  netip.Addr
}

// NodeSettings is this node's configuration of the programs.
type NodeSettings struct {
	NodeIP        netip.Addr
	PodCIDR       netip.Prefix
	UplinkIfIndex int
	Masquerade    bool
	// NATPortMin and NATPortMax bound the ports that the masquerade allocates
	// when a pod's own source port is taken.
	NATPortMin, NATPortMax uint16
	// UplinkClsact and PodClsact record which programs are attached as
	// cls_bpf filters on a clsact qdisc rather than as tcx links. The CNI
	// plugin follows PodClsact for new pods.
	UplinkClsact, PodClsact bool
}

// UplinkAttachMode returns how the uplink programs are attached.
func (s NodeSettings) UplinkAttachMode() AttachMode { return modeOf(s.UplinkClsact) }

// PodAttachMode returns how pod programs are attached.
func (s NodeSettings) PodAttachMode() AttachMode { return modeOf(s.PodClsact) }

func modeOf(clsact bool) AttachMode {
	if clsact {
		return AttachClsact
	}
	return AttachTCX
}

// be32 returns the IPv4 address in the byte order the programs keep it:
// network order, read as a little-endian uint32 by the generated types.
func be32(a netip.Addr) uint32 {
	b := a.As4()
	return binary.LittleEndian.Uint32(b[:])
}

func addrFromBE32(v uint32) netip.Addr {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

// be16 converts a port between host order and the network order of the maps.
func be16(v uint16) uint16 { return v<<8 | v>>8 }

func toMAC(hw net.HardwareAddr) ([6]uint8, error) {
	var mac [6]uint8
	if len(hw) != 6 {
		return mac, fmt.Errorf("invalid MAC address %q: want 6 bytes", hw.String())
	}
	copy(mac[:], hw)
	return mac, nil
}

func lpmKey(p netip.Prefix) hostLpmV4Key {
	p = p.Masked()
	return hostLpmV4Key{Prefixlen: uint32(p.Bits()), Addr: be32(p.Addr())}
}

func prefixFromKey(k hostLpmV4Key) netip.Prefix {
	return netip.PrefixFrom(addrFromBE32(k.Addr), int(k.Prefixlen))
}

func requireIPv4Prefix(p netip.Prefix) error {
	if !p.IsValid() || !p.Addr().Is4() {
		return fmt.Errorf("invalid IPv4 prefix %q", p.String())
	}
	return nil
}
