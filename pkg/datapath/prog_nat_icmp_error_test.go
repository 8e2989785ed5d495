package datapath

import (
	"bytes"
	"net"
	"net/netip"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/ferrynet/ferry/internal/packettest"
)

// Addresses of the routers that send ICMP errors in these tests.
var (
	testRouter    = netip.MustParseAddr("198.51.100.1")
	testGatewayIP = netip.MustParseAddr("10.0.1.1")
)

// icmpError describes an Ethernet frame that carries an ICMP error quoting
// the start of an IPv4 packet.
type icmpError struct {
	srcMAC, dstMAC net.HardwareAddr
	src, dst       netip.Addr
	ttl            uint8
	typ, code      uint8
	mtu            uint16 // the next-hop MTU of "fragmentation needed"
	quote          []byte // the quoted IPv4 packet, as much as the sender quotes
	padding        int    // zero bytes after the IP packet, as Ethernet pads short frames
}

func buildICMPError(t *testing.T, e icmpError) []byte {
	t.Helper()

	eth := &layers.Ethernet{SrcMAC: e.srcMAC, DstMAC: e.dstMAC,
		EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: e.ttl, Id: 0x5151, Protocol: layers.IPProtocolICMPv4,
		SrcIP: e.src.AsSlice(), DstIP: e.dst.AsSlice()}
	// The ICMP header's last four bytes are unused, or carry the MTU in the last two.
	icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(e.typ, e.code), Seq: e.mtu}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{ComputeChecksums: true, FixLengths: true}
	err := gopacket.SerializeLayers(buf, opts, eth, ip, icmp, gopacket.Payload(e.quote))
	if err != nil {
		t.Fatalf("serialize ICMP error: %v", err)
	}
	return append(append([]byte(nil), buf.Bytes()...), make([]byte, e.padding)...)
}

// quoteOf returns the first n bytes of the IPv4 packet in an Ethernet
// frame, or all of it when n is negative.
func quoteOf(frame []byte, n int) []byte {
	ip := frame[14:]
	if n < 0 || n > len(ip) {
		n = len(ip)
	}
	return append([]byte(nil), ip[:n]...)
}

// errorCase is an ICMP error about a flow: the error's kind and how much of
// the offending packet it quotes, in bytes after the quoted IP header.
type errorCase struct {
	name      string
	typ, code uint8
	mtu       uint16
	from      netip.Addr
	l4Quote   int // -1 quotes the whole packet
	padding   int
}

var errorCases = []errorCase{
	{name: "port unreachable", typ: 3, code: 3, l4Quote: 8},
	{name: "fragmentation needed quoting 548 bytes", typ: 3, code: 4, mtu: 1400, l4Quote: 528,
		from: testRouter},
	{name: "time exceeded", typ: 11, code: 0, l4Quote: 8, from: testGatewayIP},
	{name: "host unreachable quoting the ports only", typ: 3, code: 1, l4Quote: 4,
		from: testRouter, padding: 20},
	{name: "parameter problem quoting the TCP checksum", typ: 12, code: 0, l4Quote: 18,
		from: testRouter},
	{name: "time exceeded quoting the whole packet", typ: 11, code: 0, l4Quote: -1,
		from: testRouter},
}

// quoteLen returns how many bytes of frame's IP packet c quotes.
func (c errorCase) quoteLen(frame []byte) int {
	if c.l4Quote < 0 {
		return -1
	}
	return packettest.IPv4HeaderLen(frame) + c.l4Quote
}

func TestProgNATICMPErrorIngress(t *testing.T) {
	e := newProgEnv(t)
	podA, podB := e.podA, e.podB
	long := bytes.Repeat([]byte("0123456789"), 60)
	tcp, udp, icmp := layers.IPProtocolTCP, layers.IPProtocolUDP, layers.IPProtocolICMPv4
	flows := []*natFlow{
		{name: "TCP", pod: podA.IP, proto: tcp, podPort: 41000, remote: testRemote1,
			remotePort: 80, payload: long, keepPort: true, target: &podA},
		{name: "TCP of a second pod on a moved port", pod: podB.IP, proto: tcp, podPort: 41000,
			remote: testRemote1, remotePort: 80, payload: long, target: &podB},
		{name: "TCP with IP options", pod: podA.IP, proto: tcp, podPort: 41001,
			remote: testRemote1, remotePort: 80, ipOptions: true, payload: long,
			keepPort: true, target: &podA},
		{name: "UDP", pod: podA.IP, proto: udp, podPort: 5100, remote: testDNS,
			remotePort: 53, payload: long, keepPort: true, target: &podA},
		{name: "UDP of a second pod on a moved port", pod: podB.IP, proto: udp, podPort: 5100,
			remote: testDNS, remotePort: 53, payload: long, target: &podB},
		{name: "UDP without checksum", pod: podA.IP, proto: udp, podPort: 5101,
			remote: testDNS, remotePort: 53, zeroUDPChecksum: true, payload: long,
			keepPort: true, target: &podA},
		{name: "ICMP echo", pod: podA.IP, proto: icmp, podPort: 0x3333, remote: testRemote1,
			payload: long, keepPort: true, target: &podA},
		{name: "ICMP echo of a second pod on a moved identifier", pod: podB.IP, proto: icmp,
			podPort: 0x3333, remote: testRemote1, payload: long, target: &podB},
	}

	for _, f := range flows {
		t.Run(f.name, func(t *testing.T) {
			port, ok := e.checkSNAT(t, *f)
			if !ok {
				t.Fatalf("first packet was not translated")
			}
			sent := packettest.Build(t, f.snatted(f.egressFrame(), port))
			original := packettest.Build(t, f.egressFrame())
			for _, c := range errorCases {
				t.Run(c.name, func(t *testing.T) {
					from := c.from
					if !from.IsValid() {
						from = f.remote
					}
					in := icmpError{srcMAC: testPeerNodeMAC, dstMAC: testUplinkMAC, src: from,
						dst: testNodeIP, ttl: 60, typ: c.typ, code: c.code, mtu: c.mtu,
						quote: quoteOf(sent, c.quoteLen(sent)), padding: c.padding}
					if f.proto == icmp && c.l4Quote >= 0 && c.l4Quote < 6 {
						// Without the identifier the error names no mapping.
						e.check(t, e.dp.uplinkIngress, progCase{in: buildICMPError(t, in),
							verdict: tcActOK})
						return
					}
					want := in
					want.srcMAC, want.dstMAC = f.target.HostMAC, f.target.PodMAC
					want.dst = f.pod
					want.ttl--
					want.quote = quoteOf(original, c.quoteLen(original))
					out := e.check(t, e.dp.uplinkIngress, progCase{
						in:      buildICMPError(t, in),
						verdict: tcActRedirect,
						want:    buildICMPError(t, want),
						counted: []Reason{ReasonRevSNATICMPError, ReasonFwdLocal},
					})
					checkQuotedChecksums(t, out, c.l4Quote)
				})
			}
		})
	}

	t.Run("not translated", func(t *testing.T) {
		f := flows[0]
		sent := packettest.Build(t, f.snatted(f.egressFrame(), f.podPort))
		otherPort := packettest.Build(t, f.snatted(f.egressFrame(), 45001))
		laterFragment := withFragmentOffset(sent, 100)
		badVersion := withByte(sent, 14, 0x65)
		unreachable := func(quote []byte) []byte {
			return buildICMPError(t, icmpError{srcMAC: testPeerNodeMAC, dstMAC: testUplinkMAC,
				src: testRouter, dst: testNodeIP, ttl: 60, typ: 3, code: 1, quote: quote})
		}
		cases := []progCase{
			{name: "about an unmapped port", in: unreachable(quoteOf(otherPort, 28))},
			{name: "quoting 3 bytes of the TCP header", in: unreachable(quoteOf(sent, 23))},
			{name: "quoting 12 bytes of the IP header", in: unreachable(quoteOf(sent, 12))},
			{name: "quoting nothing", in: unreachable(nil)},
			{name: "quoting a later fragment", in: unreachable(quoteOf(laterFragment, 28))},
			{name: "quoting IP version 6", in: unreachable(quoteOf(badVersion, 28))},
			{name: "ICMP header cut short", in: unreachable(nil)[:14+20+4]},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				c.verdict = tcActOK
				e.check(t, e.dp.uplinkIngress, c)
			})
		}
	})
}

// checkQuotedChecksums checks the IPv4 checksum of the packet quoted in the
// ICMP error frame and, when the whole packet is quoted, its L4 checksum.
func checkQuotedChecksums(t *testing.T, frame []byte, l4Quote int) {
	t.Helper()

	ihl := packettest.IPv4HeaderLen(frame)
	inner := frame[14+ihl+8:]
	// Give the quote an Ethernet header so that the packettest helpers read it.
	quoted := append(make([]byte, 14), inner...)
	quoted[12] = 0x08
	if l4Quote < 0 {
		if err := packettest.CheckIPv4Checksums(quoted); err != nil {
			t.Errorf("quoted packet: %v", err)
		}
		return
	}
	innerIHL := packettest.IPv4HeaderLen(quoted)
	var sum uint32
	for i := 14; i < 14+innerIHL; i += 2 {
		sum += uint32(quoted[i])<<8 | uint32(quoted[i+1])
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	if sum != 0xffff {
		t.Errorf("quoted IPv4 header checksum is wrong (sum %#04x)", sum)
	}
}

// withFragmentOffset returns a copy of frame as a later fragment at offset
// (in 8-byte units) with a header checksum that matches.
func withFragmentOffset(frame []byte, offset uint16) []byte {
	out := append([]byte(nil), frame...)
	out[14+6], out[14+7] = byte(offset>>8)&0x1f, byte(offset)
	return withIPProtocol(out, out[14+9])
}

func TestProgNATICMPErrorEgress(t *testing.T) {
	e := newProgEnv(t)
	podA := e.podA
	tcp, udp := layers.IPProtocolTCP, layers.IPProtocolUDP
	flows := []*natFlow{
		{name: "UDP", pod: podA.IP, proto: udp, podPort: 5200, remote: testDNS,
			remotePort: 53, payload: []byte("query"), keepPort: true, target: &podA},
		{name: "TCP", pod: podA.IP, proto: tcp, podPort: 5200, remote: testRemote1,
			remotePort: 80, payload: []byte("syn"), keepPort: true, target: &podA},
	}
	holder := synFlow(e.podB.IP, 5201)
	holder.keepPort = true
	if _, ok := e.checkSNAT(t, holder); !ok {
		t.Fatalf("flow that holds port 5201 was not translated")
	}
	flows = append(flows, &natFlow{name: "TCP on a moved port", pod: podA.IP, proto: tcp,
		podPort: 5201, remote: testRemote1, remotePort: 80, payload: []byte("syn"),
		target: &podA})

	for _, f := range flows {
		t.Run(f.name, func(t *testing.T) {
			port, ok := e.checkSNAT(t, *f)
			if !ok {
				t.Fatalf("first packet was not translated")
			}
			// The reply as the remote end sent it, and as the pod got it.
			arrived := f.replyFrame(port)
			arrived.Payload = bytes.Repeat([]byte("r"), 100)
			got := f.replyTranslated(port)
			got.Payload = arrived.Payload
			// The pod quotes the reply with the TTL it had on arrival in the pod.
			arrived.TTL = got.TTL
			for _, quoteLen := range []int{28, -1} {
				// The pod answers with port unreachable, routed by the node.
				in := icmpError{srcMAC: testUplinkMAC, dstMAC: testPeerNodeMAC, src: f.pod,
					dst: f.remote, ttl: 63, typ: 3, code: 3,
					quote: quoteOf(packettest.Build(t, got), quoteLen)}
				want := in
				want.src = testNodeIP
				want.quote = quoteOf(packettest.Build(t, arrived), quoteLen)
				out := e.check(t, e.dp.uplinkEgress, progCase{
					in:      buildICMPError(t, in),
					verdict: tcActOK,
					want:    buildICMPError(t, want),
					counted: []Reason{ReasonSNATICMPError},
				})
				checkQuotedChecksums(t, out, quoteLen-20)
			}
		})
	}
}
