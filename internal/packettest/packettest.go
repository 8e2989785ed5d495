// Package packettest builds Ethernet frames for tests of ferry's TC programs
// and checks the frames that the programs return.
package packettest

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// TCP flag bits as they sit in byte 13 of the TCP header.
const (
	FIN uint8 = 0x01
	SYN uint8 = 0x02
	RST uint8 = 0x04
	PSH uint8 = 0x08
	ACK uint8 = 0x10
)

// Frame describes an Ethernet frame that carries IPv4 with TCP, UDP or an
// ICMP echo message.
type Frame struct {
	SrcMAC, DstMAC net.HardwareAddr
	Src, Dst       netip.Addr
	TTL            uint8
	IPID           uint16
	// IPOptions lengthen the IPv4 header beyond 20 bytes.
	IPOptions []layers.IPv4Option
	// MoreFragments sets the MF flag, which makes the frame a first fragment.
	MoreFragments bool
	Proto         layers.IPProtocol // IPProtocolTCP, IPProtocolUDP or IPProtocolICMPv4

	SrcPort, DstPort uint16 // TCP and UDP
	TCPFlags         uint8  // TCP: FIN, SYN, RST, PSH and ACK bits
	// ZeroUDPChecksum sends UDP without a checksum, as RFC 768 allows.
	ZeroUDPChecksum bool

	ICMPType        uint8 // layers.ICMPv4TypeEchoRequest or layers.ICMPv4TypeEchoReply
	ICMPID, ICMPSeq uint16

	Payload []byte
}

// Build serializes f with lengths and checksums computed, and fails the test
// when gopacket rejects a field.
func Build(t testing.TB, f Frame) []byte {
	t.Helper()

	eth := &layers.Ethernet{
		SrcMAC:       f.SrcMAC,
		DstMAC:       f.DstMAC,
		EthernetType: layers.EthernetTypeIPv4,
	}
	ip := &layers.IPv4{
		Version:  4,
		TTL:      f.TTL,
		Id:       f.IPID,
		Protocol: f.Proto,
		SrcIP:    f.Src.AsSlice(),
		DstIP:    f.Dst.AsSlice(),
		Options:  f.IPOptions,
	}
	if f.MoreFragments {
		ip.Flags = layers.IPv4MoreFragments
	}

	stack := []gopacket.SerializableLayer{eth, ip}
	switch f.Proto {
	case layers.IPProtocolTCP:
		tcp := &layers.TCP{
			SrcPort: layers.TCPPort(f.SrcPort),
			DstPort: layers.TCPPort(f.DstPort),
			Seq:     0x01020304,
			Window:  64240,
			FIN:     f.TCPFlags&FIN != 0,
			SYN:     f.TCPFlags&SYN != 0,
			RST:     f.TCPFlags&RST != 0,
			PSH:     f.TCPFlags&PSH != 0,
			ACK:     f.TCPFlags&ACK != 0,
		}
		if tcp.ACK {
			tcp.Ack = 0x0a0b0c0d
		}
		if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
			t.Fatalf("set TCP pseudo-header: %v", err)
		}
		stack = append(stack, tcp)
	case layers.IPProtocolUDP:
		udp := &layers.UDP{SrcPort: layers.UDPPort(f.SrcPort), DstPort: layers.UDPPort(f.DstPort)}
		if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
			t.Fatalf("set UDP pseudo-header: %v", err)
		}
		stack = append(stack, udp)
	case layers.IPProtocolICMPv4:
		stack = append(stack, &layers.ICMPv4{
			TypeCode: layers.CreateICMPv4TypeCode(f.ICMPType, 0),
			Id:       f.ICMPID,
			Seq:      f.ICMPSeq,
		})
	default:
		t.Fatalf("build frame: unsupported IP protocol %v", f.Proto)
	}
	stack = append(stack, gopacket.Payload(f.Payload))

	frame := serialize(t, stack...)
	if f.Proto == layers.IPProtocolUDP && f.ZeroUDPChecksum {
		off := UDPChecksumOffset(frame)
		frame[off], frame[off+1] = 0, 0
	}
	return frame
}

// ARP describes an Ethernet frame that carries an Ethernet/IPv4 ARP packet.
type ARP struct {
	SrcMAC, DstMAC       net.HardwareAddr // Ethernet header
	Op                   uint16           // layers.ARPRequest or layers.ARPReply
	SenderMAC, TargetMAC net.HardwareAddr
	SenderIP, TargetIP   netip.Addr
}

// BuildARP serializes a as a 42-byte frame.
func BuildARP(t testing.TB, a ARP) []byte {
	t.Helper()

	eth := &layers.Ethernet{
		SrcMAC:       a.SrcMAC,
		DstMAC:       a.DstMAC,
		EthernetType: layers.EthernetTypeARP,
	}
	arp := &layers.ARP{
		AddrType:          layers.LinkTypeEthernet,
		Protocol:          layers.EthernetTypeIPv4,
		HwAddressSize:     6,
		ProtAddressSize:   4,
		Operation:         a.Op,
		SourceHwAddress:   a.SenderMAC,
		SourceProtAddress: a.SenderIP.AsSlice(),
		DstHwAddress:      a.TargetMAC,
		DstProtAddress:    a.TargetIP.AsSlice(),
	}
	return serialize(t, eth, arp)
}

// BuildIPv6UDP serializes an IPv6 UDP datagram between two link-local addresses.
func BuildIPv6UDP(t testing.TB, srcMAC, dstMAC net.HardwareAddr) []byte {
	t.Helper()

	eth := &layers.Ethernet{SrcMAC: srcMAC, DstMAC: dstMAC, EthernetType: layers.EthernetTypeIPv6}
	ip := &layers.IPv6{
		Version:    6,
		HopLimit:   64,
		NextHeader: layers.IPProtocolUDP,
		SrcIP:      net.ParseIP("fe80::1"),
		DstIP:      net.ParseIP("fe80::2"),
	}
	udp := &layers.UDP{SrcPort: 5353, DstPort: 5353}
	if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatalf("set UDP pseudo-header: %v", err)
	}
	return serialize(t, eth, ip, udp, gopacket.Payload("ipv6"))
}

func serialize(t testing.TB, stack ...gopacket.SerializableLayer) []byte {
	t.Helper()

	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{ComputeChecksums: true, FixLengths: true}
	if err := gopacket.SerializeLayers(buf, opts, stack...); err != nil {
		t.Fatalf("serialize frame: %v", err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// IsIPv4 reports whether frame carries IPv4 in an Ethernet header without VLAN tags.
func IsIPv4(frame []byte) bool {
	return len(frame) >= 14 && frame[12] == 0x08 && frame[13] == 0x00
}

// IPv4HeaderLen returns the length of the IPv4 header of an Ethernet frame.
func IPv4HeaderLen(frame []byte) int { return int(frame[14]&0x0f) * 4 }

// UDPChecksumOffset returns the offset of the UDP checksum in an Ethernet
// frame that carries IPv4 and UDP.
func UDPChecksumOffset(frame []byte) int { return 14 + IPv4HeaderLen(frame) + 6 }

// CheckIPv4Checksums recomputes the IPv4 header checksum and the TCP, UDP or
// ICMP checksum of an Ethernet frame and returns an error naming each one
// that is wrong. A zero UDP checksum counts as valid, because it means that
// the sender computed none. Fragments get their IPv4 checksum checked only.
func CheckIPv4Checksums(frame []byte) error {
	if len(frame) < 14+20 {
		return fmt.Errorf("frame of %d bytes is too short for IPv4", len(frame))
	}
	ipStart := 14
	ihl := IPv4HeaderLen(frame)
	totalLen := int(frame[ipStart+2])<<8 | int(frame[ipStart+3])
	if ihl < 20 || totalLen < ihl || ipStart+totalLen > len(frame) {
		return fmt.Errorf("invalid IPv4 lengths: header %d, total %d, frame %d",
			ihl, totalLen, len(frame))
	}

	var errs []string
	if sum := onesComplementSum(0, frame[ipStart:ipStart+ihl]); sum != 0xffff {
		errs = append(errs, fmt.Sprintf("IPv4 header checksum %#04x is wrong (sum %#04x)",
			be16At(frame, ipStart+10), sum))
	}

	l4 := frame[ipStart+ihl : ipStart+totalLen]
	proto := frame[ipStart+9]
	var sum uint16
	// A fragment's L4 checksum covers the whole datagram, which one frame lacks.
	if be16At(frame, ipStart+6)&0x3fff != 0 {
		proto = 0
	}
	switch proto {
	case uint8(layers.IPProtocolTCP), uint8(layers.IPProtocolUDP):
		if proto == uint8(layers.IPProtocolUDP) && len(l4) >= 8 && be16At(l4, 6) == 0 {
			break
		}
		pseudo := make([]byte, 0, 12)
		pseudo = append(pseudo, frame[ipStart+12:ipStart+20]...)
		pseudo = append(pseudo, 0, proto, byte(len(l4)>>8), byte(len(l4)))
		sum = onesComplementSum(onesComplementSum(0, pseudo), l4)
	case uint8(layers.IPProtocolICMPv4):
		sum = onesComplementSum(0, l4)
	default:
		sum = 0xffff
	}
	if sum != 0 && sum != 0xffff {
		errs = append(errs, fmt.Sprintf("checksum of IP protocol %d is wrong (sum %#04x)",
			proto, sum))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// onesComplementSum adds data as big-endian 16-bit words to sum in ones'
// complement arithmetic (RFC 1071); a checksummed range sums to 0xffff.
func onesComplementSum(sum uint16, data []byte) uint16 {
	acc := uint32(sum)
	for i := 0; i+1 < len(data); i += 2 {
		acc += uint32(data[i])<<8 | uint32(data[i+1])
	}
	if len(data)%2 == 1 {
		acc += uint32(data[len(data)-1]) << 8
	}
	for acc > 0xffff {
		acc = acc>>16 + acc&0xffff
	}
	return uint16(acc)
}

func be16At(b []byte, off int) uint16 { return uint16(b[off])<<8 | uint16(b[off+1]) }

// Diff lists the bytes in which got differs from want, or returns "" when
// the two are equal.
func Diff(want, got []byte) string {
	var lines []string
	if len(want) != len(got) {
		lines = append(lines, fmt.Sprintf("length %d, want %d", len(got), len(want)))
	}
	for i := 0; i < min(len(want), len(got)); i++ {
		if want[i] != got[i] {
			lines = append(lines, fmt.Sprintf("byte %d: %#02x, want %#02x", i, got[i], want[i]))
		}
	}
	const maxLines = 16
	if len(lines) > maxLines {
		more := len(lines) - maxLines
		lines = append(lines[:maxLines], fmt.Sprintf("and %d more differences", more))
	}
	return strings.Join(lines, "\n")
}
