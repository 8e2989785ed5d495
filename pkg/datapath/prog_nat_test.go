package datapath

import (
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/ferrynet/ferry/internal/packettest"
)

var (
	testRemote1 = netip.MustParseAddr("203.0.113.10")
	testRemote2 = netip.MustParseAddr("203.0.113.11")
	testDNS     = netip.MustParseAddr("198.51.100.53")
)

// natFlow is a flow that a pod opens to a remote address through the
// masquerade.
type natFlow struct {
	name    string
	pod     netip.Addr
	proto   layers.IPProtocol
	podPort uint16 // TCP or UDP source port, or ICMP echo identifier
	remote  netip.Addr
	// remotePort is the TCP or UDP destination port; ICMP echo has none.
	remotePort uint16

	ipOptions bool // the packets carry a Router Alert option
	// firstFragment sends the flow's first packet as the first fragment of
	// a datagram; replies are whole.
	firstFragment   bool
	zeroUDPChecksum bool
	// zeroAfterSNAT picks the payload so that the UDP checksum computes to
	// zero after the translation, which UDP sends as 0xffff (RFC 768). The
	// translation must keep the port.
	zeroAfterSNAT bool
	payload       []byte

	// keepPort requires the translation to keep podPort. Otherwise the node
	// port must lie in the configured range and differ from podPort.
	keepPort bool
	// target is the pod's endpoint when the pod runs on the test node, for
	// delivery of replies.
	target *testPod
}

// egressFrame returns the flow's first packet as it leaves the uplink,
// before the translation: routed, so with the uplink's and gateway's MACs.
func (f natFlow) egressFrame() packettest.Frame {
	frame := packettest.Frame{
		SrcMAC:          testUplinkMAC,
		DstMAC:          testPeerNodeMAC,
		Src:             f.pod,
		Dst:             f.remote,
		TTL:             63,
		IPID:            0x77,
		Proto:           f.proto,
		SrcPort:         f.podPort,
		DstPort:         f.remotePort,
		TCPFlags:        packettest.SYN,
		ZeroUDPChecksum: f.zeroUDPChecksum,
		ICMPType:        layers.ICMPv4TypeEchoRequest,
		ICMPID:          f.podPort,
		ICMPSeq:         7,
		Payload:         f.payload,
	}
	if f.ipOptions {
		frame = withRouterAlert(frame)
	}
	frame.MoreFragments = f.firstFragment
	return frame
}

// snatted returns frame with the pod's address and port replaced by the
// node's.
func (f natFlow) snatted(frame packettest.Frame, nodePort uint16) packettest.Frame {
	frame.Src = testNodeIP
	if f.proto == layers.IPProtocolICMPv4 {
		frame.ICMPID = nodePort
	} else {
		frame.SrcPort = nodePort
	}
	return frame
}

// replyFrame returns the remote end's reply as it arrives on the uplink.
func (f natFlow) replyFrame(nodePort uint16) packettest.Frame {
	frame := packettest.Frame{
		SrcMAC:          testPeerNodeMAC,
		DstMAC:          testUplinkMAC,
		Src:             f.remote,
		Dst:             testNodeIP,
		TTL:             60,
		IPID:            0x99,
		Proto:           f.proto,
		SrcPort:         f.remotePort,
		DstPort:         nodePort,
		TCPFlags:        packettest.SYN | packettest.ACK,
		ZeroUDPChecksum: f.zeroUDPChecksum,
		ICMPType:        layers.ICMPv4TypeEchoReply,
		ICMPID:          nodePort,
		ICMPSeq:         7,
		Payload:         []byte("reply"),
	}
	if f.ipOptions {
		frame = withRouterAlert(frame)
	}
	return frame
}

// replyTranslated returns the reply after the reverse translation and, for
// a pod on the node, the delivery to it.
func (f natFlow) replyTranslated(nodePort uint16) packettest.Frame {
	frame := f.replyFrame(nodePort)
	frame.Dst = f.pod
	if f.proto == layers.IPProtocolICMPv4 {
		frame.ICMPID = f.podPort
	} else {
		frame.DstPort = f.podPort
	}
	if f.target != nil {
		frame = delivered(frame, *f.target)
	}
	return frame
}

// decodeIPv4 decodes an Ethernet frame with gopacket and returns its IPv4
// layer and its source and destination ports; for ICMP both are the echo
// identifier.
func decodeIPv4(t *testing.T, frame []byte) (ip *layers.IPv4, sport, dport uint16) {
	t.Helper()

	var (
		eth     layers.Ethernet
		ipv4    layers.IPv4
		tcp     layers.TCP
		udp     layers.UDP
		icmp    layers.ICMPv4
		payload gopacket.Payload
	)
	parser := gopacket.NewDecodingLayerParser(layers.LayerTypeEthernet,
		&eth, &ipv4, &tcp, &udp, &icmp, &payload)
	// Payloads that gopacket would decode further, such as DNS, stay opaque.
	parser.IgnoreUnsupported = true
	var decoded []gopacket.LayerType
	if err := parser.DecodeLayers(frame, &decoded); err != nil {
		t.Fatalf("decode output frame: %v", err)
	}
	if ipv4.Flags&layers.IPv4MoreFragments != 0 && ipv4.FragOffset == 0 {
		// gopacket leaves a fragment's payload undecoded.
		return decodeFirstFragment(t, &ipv4)
	}
	for _, layer := range decoded {
		switch layer {
		case layers.LayerTypeTCP:
			return &ipv4, uint16(tcp.SrcPort), uint16(tcp.DstPort)
		case layers.LayerTypeUDP:
			return &ipv4, uint16(udp.SrcPort), uint16(udp.DstPort)
		case layers.LayerTypeICMPv4:
			return &ipv4, icmp.Id, icmp.Id
		}
	}
	t.Fatalf("output frame has no TCP, UDP or ICMP layer, only %v", decoded)
	return nil, 0, 0
}

// decodeFirstFragment decodes the L4 header at the start of a first
// fragment's payload, as decodeIPv4 does for a whole packet.
func decodeFirstFragment(t *testing.T, ip *layers.IPv4) (*layers.IPv4, uint16, uint16) {
	t.Helper()

	var err error
	switch ip.Protocol {
	case layers.IPProtocolTCP:
		var tcp layers.TCP
		if err = tcp.DecodeFromBytes(ip.Payload, gopacket.NilDecodeFeedback); err == nil {
			return ip, uint16(tcp.SrcPort), uint16(tcp.DstPort)
		}
	case layers.IPProtocolUDP:
		var udp layers.UDP
		if err = udp.DecodeFromBytes(ip.Payload, gopacket.NilDecodeFeedback); err == nil {
			return ip, uint16(udp.SrcPort), uint16(udp.DstPort)
		}
	case layers.IPProtocolICMPv4:
		var icmp layers.ICMPv4
		if err = icmp.DecodeFromBytes(ip.Payload, gopacket.NilDecodeFeedback); err == nil {
			return ip, icmp.Id, icmp.Id
		}
	default:
		err = fmt.Errorf("unexpected IP protocol %v", ip.Protocol)
	}
	t.Fatalf("decode first fragment: %v", err)
	return nil, 0, 0
}

// setZeroAfterSNAT fills a flow's two-byte payload so that the UDP checksum
// of its first packet sums to zero once the node address replaces the pod's.
func setZeroAfterSNAT(t *testing.T, f *natFlow) {
	t.Helper()

	f.payload = []byte{0, 0}
	frame := packettest.Build(t, f.snatted(f.egressFrame(), f.podPort))
	// The checksum over a zero payload word is the word that makes the sum zero.
	off := packettest.UDPChecksumOffset(frame)
	f.payload = []byte{frame[off], frame[off+1]}
}

// listenOnNode opens a TCP listener and a UDP socket on the node IP inside
// the test namespace, which the masquerade must not take ports from.
func (e *progEnv) listenOnNode(t *testing.T, tcpPort, udpPort uint16) {
	t.Helper()

	err := e.netns.Do(func(ns.NetNS) error {
		l, err := net.ListenTCP("tcp4", net.TCPAddrFromAddrPort(
			netip.AddrPortFrom(testNodeIP, tcpPort)))
		if err != nil {
			return err
		}
		t.Cleanup(func() { _ = l.Close() })
		c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(
			netip.AddrPortFrom(testNodeIP, udpPort)))
		if err != nil {
			return err
		}
		t.Cleanup(func() { _ = c.Close() })
		return nil
	})
	if err != nil {
		t.Fatalf("open sockets on the node IP: %v", err)
	}
}

func TestProgMasquerade(t *testing.T) {
	e := newProgEnv(t)
	podA, podB := e.podA, e.podB
	unknownPod := netip.MustParseAddr("10.200.0.9")
	e.listenOnNode(t, 40100, 5002)

	tcp, udp, icmp := layers.IPProtocolTCP, layers.IPProtocolUDP, layers.IPProtocolICMPv4
	flows := []*natFlow{
		{name: "TCP SYN", pod: podA.IP, proto: tcp, podPort: 40000,
			remote: testRemote1, remotePort: 80, keepPort: true, target: &podA},
		{name: "TCP SYN of a second pod from the same port", pod: podB.IP, proto: tcp,
			podPort: 40000, remote: testRemote1, remotePort: 80, target: &podB},
		{name: "TCP SYN from the same port to another destination", pod: podB.IP, proto: tcp,
			podPort: 40000, remote: testRemote2, remotePort: 80, keepPort: true, target: &podB},
		{name: "TCP SYN from a port a node socket uses", pod: podA.IP, proto: tcp,
			podPort: 40100, remote: testRemote1, remotePort: 80, target: &podA},
		{name: "TCP SYN with IP options", pod: podA.IP, proto: tcp, podPort: 40200,
			remote: testRemote1, remotePort: 80, ipOptions: true, keepPort: true, target: &podA},
		{name: "TCP SYN from a pod address without endpoint", pod: unknownPod, proto: tcp,
			podPort: 40300, remote: testRemote1, remotePort: 80, keepPort: true},
		{name: "UDP", pod: podA.IP, proto: udp, podPort: 5000, remote: testDNS,
			remotePort: 53, payload: []byte("query"), keepPort: true, target: &podA},
		{name: "UDP without checksum", pod: podA.IP, proto: udp, podPort: 5001,
			remote: testDNS, remotePort: 53, zeroUDPChecksum: true, payload: []byte("query"),
			keepPort: true, target: &podA},
		{name: "UDP with a checksum that becomes zero", pod: podA.IP, proto: udp,
			podPort: 5003, remote: testDNS, remotePort: 53, zeroAfterSNAT: true,
			keepPort: true, target: &podA},
		{name: "UDP from a port a node socket uses", pod: podB.IP, proto: udp, podPort: 5002,
			remote: testDNS, remotePort: 53, payload: []byte("query"), target: &podB},
		{name: "ICMP echo request", pod: podA.IP, proto: icmp, podPort: 0x1234,
			remote: testRemote1, payload: []byte("ping"), keepPort: true, target: &podA},
		{name: "ICMP echo request of a second pod with the same identifier", pod: podB.IP,
			proto: icmp, podPort: 0x1234, remote: testRemote1, payload: []byte("ping"),
			target: &podB},
		{name: "ICMP echo request with identifier 0", pod: podA.IP, proto: icmp, podPort: 0,
			remote: testRemote1, payload: []byte("ping"), keepPort: true, target: &podA},
		{name: "ICMP echo request of a second pod with identifier 0", pod: podB.IP,
			proto: icmp, podPort: 0, remote: testRemote1, payload: []byte("ping"),
			target: &podB},
		{name: "UDP first fragment", pod: podA.IP, proto: udp, podPort: 5004, remote: testDNS,
			remotePort: 53, firstFragment: true, payload: []byte("first fragment"),
			keepPort: true, target: &podA},
		{name: "ICMP echo request first fragment", pod: podB.IP, proto: icmp, podPort: 0x2222,
			remote: testRemote2, firstFragment: true, payload: []byte("first fragment"),
			keepPort: true, target: &podB},
	}
	nodePorts := map[*natFlow]uint16{}

	t.Run("egress", func(t *testing.T) {
		for _, f := range flows {
			t.Run(f.name, func(t *testing.T) {
				if f.zeroAfterSNAT {
					setZeroAfterSNAT(t, f)
				}
				port, ok := e.checkSNAT(t, *f)
				if ok {
					nodePorts[f] = port
				}
			})
		}
	})

	t.Run("node ports are unique per remote end", func(t *testing.T) {
		type remoteEnd struct {
			proto  layers.IPProtocol
			remote netip.AddrPort
		}
		flowByPort := map[remoteEnd]map[uint16]string{}
		for _, f := range flows {
			port, ok := nodePorts[f]
			if !ok {
				continue
			}
			end := remoteEnd{f.proto, netip.AddrPortFrom(f.remote, f.remotePort)}
			if flowByPort[end] == nil {
				flowByPort[end] = map[uint16]string{}
			}
			if other, dup := flowByPort[end][port]; dup {
				t.Errorf("flows %q and %q both got node port %d", other, f.name, port)
			}
			flowByPort[end][port] = f.name
		}
	})

	t.Run("NAT table", func(t *testing.T) {
		checkNATTable(t, e, flows, nodePorts)
	})

	t.Run("egress on an existing mapping", func(t *testing.T) {
		f := flowNamed(t, flows, "TCP SYN of a second pod from the same port")
		port, ok := nodePorts[f]
		if !ok {
			t.Skip("skipping: the flow's first packet was not translated")
		}
		entriesBefore := natEntries(t, e)
		ack := change(f.egressFrame(), func(p *packettest.Frame) { p.TCPFlags = packettest.ACK })
		e.check(t, e.dp.uplinkEgress, progCase{
			in:      packettest.Build(t, ack),
			verdict: tcActOK,
			want:    packettest.Build(t, f.snatted(ack, port)),
			counted: []Reason{ReasonSNAT},
		})
		if got := len(natEntries(t, e)); got != len(entriesBefore) {
			t.Errorf("NAT table has %d entries, want %d as before", got, len(entriesBefore))
		}
	})

	t.Run("egress unchanged", func(t *testing.T) {
		checkEgressUnchanged(t, e)
	})

	t.Run("ingress", func(t *testing.T) {
		for _, f := range flows {
			t.Run(f.name, func(t *testing.T) {
				port, ok := nodePorts[f]
				if !ok {
					t.Skip("skipping: the flow's first packet was not translated")
				}
				c := progCase{
					in:      packettest.Build(t, f.replyFrame(port)),
					verdict: tcActOK,
					want:    packettest.Build(t, f.replyTranslated(port)),
					counted: []Reason{ReasonRevSNAT},
				}
				if f.target != nil {
					c.verdict = tcActRedirect
					c.counted = append(c.counted, ReasonFwdLocal)
				}
				e.check(t, e.dp.uplinkIngress, c)
			})
		}
	})

	t.Run("ingress without mapping", func(t *testing.T) {
		syn := flowNamed(t, flows, "TCP SYN")
		echo := flowNamed(t, flows, "ICMP echo request")
		checkIngressWithoutMapping(t, e, syn, nodePorts[syn], echo, nodePorts[echo])
	})
}

func flowNamed(t *testing.T, flows []*natFlow, name string) *natFlow {
	t.Helper()

	for _, f := range flows {
		if f.name == name {
			return f
		}
	}
	t.Fatalf("no flow named %q", name)
	return nil
}

// checkSNAT runs f's first packet through the uplink egress program and
// checks its translation. It returns the node port or identifier that the
// translation chose, and false when the packet was not translated.
func (e *progEnv) checkSNAT(t *testing.T, f natFlow) (uint16, bool) {
	t.Helper()

	in := packettest.Build(t, f.egressFrame())
	before := e.counters(t)
	verdict, out := e.run(t, e.dp.uplinkEgress, in, 0)
	after := e.counters(t)

	ip, port, _ := decodeIPv4(t, out)
	if got, _ := netip.AddrFromSlice(ip.SrcIP); got != testNodeIP {
		t.Errorf("source address %s, want the node IP %s", got, testNodeIP)
		return 0, false
	}
	kept := port == f.podPort
	outOfRange := port < testNATPortMin || port > testNATPortMax
	switch {
	case f.keepPort && !kept:
		t.Errorf("node port %d, want the pod's port %d", port, f.podPort)
	case !f.keepPort && kept:
		t.Errorf("node port %d is the pod's port, want another one", port)
	case !f.keepPort && !kept && outOfRange:
		t.Errorf("node port %d outside the range %d-%d", port, testNATPortMin, testNATPortMax)
	}

	want := packettest.Build(t, f.snatted(f.egressFrame(), port))
	if f.zeroAfterSNAT {
		off := packettest.UDPChecksumOffset(want)
		want[off], want[off+1] = 0xff, 0xff
	}
	checkPortRetries(t, before, after, kept)
	c := progCase{in: in, verdict: tcActOK, want: want, counted: []Reason{ReasonSNAT}}
	checkResult(t, c, verdict, out, before, after)
	return port, true
}

// checkPortRetries requires no port retry when the translation kept the
// pod's port and at least one otherwise, then sets the retry counter in
// after back to before, so that checkResult needs no exact count: a random
// port may collide too.
func checkPortRetries(t *testing.T, before, after map[Reason]Counter, kept bool) {
	t.Helper()

	retries := after[ReasonNATPortRetry].Packets - before[ReasonNATPortRetry].Packets
	if kept && retries != 0 {
		t.Errorf("counted %d port retries for a flow that kept its port, want 0", retries)
	}
	if !kept && retries == 0 {
		t.Errorf("counted no port retry for a flow that changed its port")
	}
	after[ReasonNATPortRetry] = before[ReasonNATPortRetry]
}

func natEntries(t *testing.T, e *progEnv) []NATEntry {
	t.Helper()

	entries, err := e.dp.NATEntries()
	if err != nil {
		t.Fatalf("list NAT entries: %v", err)
	}
	return entries
}

// checkNATTable requires exactly two entries per translated flow: the egress
// entry keyed by the pod's side and the ingress entry keyed by the reply's.
func checkNATTable(t *testing.T, e *progEnv, flows []*natFlow, nodePorts map[*natFlow]uint16) {
	t.Helper()

	type entryKey struct {
		proto    uint8
		dir      NATDirection
		src, dst netip.AddrPort
	}
	entries := map[entryKey]NATEntry{}
	for _, entry := range natEntries(t, e) {
		entries[entryKey{entry.Proto, entry.Direction, entry.Src, entry.Dst}] = entry
	}
	if got, want := len(entries), 2*len(nodePorts); got != want {
		t.Errorf("NAT table has %d entries, want %d for %d flows", got, want, len(nodePorts))
	}

	now := monotonicNow()
	for _, f := range flows {
		port, ok := nodePorts[f]
		if !ok {
			continue
		}
		proto := uint8(f.proto)
		podEnd := netip.AddrPortFrom(f.pod, f.podPort)
		nodeEnd := netip.AddrPortFrom(testNodeIP, port)
		remoteEnd := netip.AddrPortFrom(f.remote, f.remotePort)

		out, ok := entries[entryKey{proto, NATEgress, podEnd, remoteEnd}]
		if !ok {
			t.Errorf("%s: no egress entry %s -> %s", f.name, podEnd, remoteEnd)
		} else if out.TranslateTo != nodeEnd {
			t.Errorf("%s: egress entry translates to %s, want %s", f.name, out.TranslateTo, nodeEnd)
		}
		in, ok := entries[entryKey{proto, NATIngress, remoteEnd, nodeEnd}]
		if !ok {
			t.Errorf("%s: no ingress entry %s -> %s", f.name, remoteEnd, nodeEnd)
		} else if in.TranslateTo != podEnd {
			t.Errorf("%s: ingress entry translates to %s, want %s", f.name, in.TranslateTo, podEnd)
		}
		if !ok {
			continue
		}

		var wantFlags uint8
		if f.proto == layers.IPProtocolTCP {
			wantFlags = tcpSYN
		}
		if out.TCPFlags != wantFlags {
			t.Errorf("%s: egress entry has TCP flags %#x, want %#x", f.name, out.TCPFlags, wantFlags)
		}
		if in.TCPFlags != 0 {
			t.Errorf("%s: ingress entry has TCP flags %#x before any reply", f.name, in.TCPFlags)
		}
		for _, entry := range []NATEntry{out, in} {
			if entry.Created == 0 || entry.Created > now || entry.LastSeen < entry.Created {
				t.Errorf("%s: %s entry created at %v, last seen at %v, now %v",
					f.name, entry.Direction, entry.Created, entry.LastSeen, now)
			}
		}
	}
}

// checkEgressUnchanged sends packets that the masquerade must leave alone
// and requires that none of them adds a NAT entry.
func checkEgressUnchanged(t *testing.T, e *progEnv) {
	podA := e.podA
	from := func(src netip.Addr, proto layers.IPProtocol, edit func(*packettest.Frame)) []byte {
		f := natFlow{pod: src, proto: proto, podPort: 41000, remote: testRemote1,
			remotePort: 80, payload: []byte("data")}
		frame := f.egressFrame()
		if edit != nil {
			edit(&frame)
		}
		return packettest.Build(t, frame)
	}
	tcp, udp, icmp := layers.IPProtocolTCP, layers.IPProtocolUDP, layers.IPProtocolICMPv4
	syn := from(podA.IP, tcp, nil)

	cases := []progCase{
		{name: "TCP ACK without mapping",
			in: from(podA.IP, tcp, func(f *packettest.Frame) { f.TCPFlags = packettest.ACK })},
		{name: "TCP SYN-ACK without mapping", in: from(podA.IP, tcp, func(f *packettest.Frame) {
			f.TCPFlags = packettest.SYN | packettest.ACK
		})},
		{name: "TCP RST without mapping",
			in: from(podA.IP, tcp, func(f *packettest.Frame) { f.TCPFlags = packettest.RST })},
		{name: "destination in an excluded range", in: from(podA.IP, tcp, func(f *packettest.Frame) {
			f.Dst = netip.MustParseAddr("10.200.1.5")
		})},
		{name: "destination of an excluded node IP", in: from(podA.IP, udp,
			func(f *packettest.Frame) { f.Dst = testPeerNodeIP })},
		{name: "source of the node", in: from(testNodeIP, tcp, nil)},
		{name: "source outside the pod range",
			in: from(netip.MustParseAddr("10.201.0.5"), udp, nil)},
		{name: "ICMP echo reply", in: from(podA.IP, icmp, func(f *packettest.Frame) {
			f.ICMPType = layers.ICMPv4TypeEchoReply
		})},
		{name: "ICMP destination unreachable", in: from(podA.IP, icmp, func(f *packettest.Frame) {
			f.ICMPType = layers.ICMPv4TypeDestinationUnreachable
		})},
		{name: "IP protocol without ports", in: withIPProtocol(syn, unix.IPPROTO_GRE)},
		{name: "TCP header cut short", in: syn[:14+20+12]},
		{name: "ARP", in: packettest.BuildARP(t, e.podA.arpFrom(testNodeIP))},
	}
	before := len(natEntries(t, e))
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.verdict = tcActOK
			e.check(t, e.dp.uplinkEgress, c)
		})
	}
	if got := len(natEntries(t, e)); got != before {
		t.Errorf("NAT table has %d entries, want %d as before", got, before)
	}
}

// withIPProtocol returns a copy of frame with another IPv4 protocol number
// and a header checksum that matches it.
func withIPProtocol(frame []byte, proto uint8) []byte {
	out := withByte(frame, 14+9, proto)
	out[14+10], out[14+11] = 0, 0
	var sum uint32
	for i := 14; i < 14+packettest.IPv4HeaderLen(out); i += 2 {
		sum += uint32(out[i])<<8 | uint32(out[i+1])
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	out[14+10], out[14+11] = byte(^sum>>8), byte(^sum)
	return out
}

// checkIngressWithoutMapping sends packets that reach the uplink without a
// matching mapping. tcpFlow and echoFlow are translated flows with their
// node ports.
func checkIngressWithoutMapping(t *testing.T, e *progEnv, tcpFlow *natFlow, tcpPort uint16,
	echoFlow *natFlow, echoPort uint16) {
	podA := e.podA
	fromPeer := natFlow{pod: netip.MustParseAddr("10.200.1.7"), proto: layers.IPProtocolTCP,
		podPort: 43000, remote: podA.IP, remotePort: 8080, payload: []byte("pod to pod")}
	// A pod on another node reaches podA: the packet arrives from the peer node.
	peerFrame := change(fromPeer.egressFrame(), func(f *packettest.Frame) {
		f.SrcMAC, f.DstMAC = testPeerNodeMAC, testUplinkMAC
	})
	peer := packettest.Build(t, peerFrame)

	cases := []progCase{
		{name: "TCP to an unmapped node port",
			in:      packettest.Build(t, tcpFlow.replyFrame(45000)),
			verdict: tcActOK},
		{name: "TCP from another remote port",
			in: packettest.Build(t, change(tcpFlow.replyFrame(tcpPort), func(f *packettest.Frame) {
				f.SrcPort = 81
			})),
			verdict: tcActOK},
		{name: "ICMP echo request with a mapped identifier",
			in: packettest.Build(t, change(echoFlow.replyFrame(echoPort),
				func(f *packettest.Frame) { f.ICMPType = layers.ICMPv4TypeEchoRequest })),
			verdict: tcActOK},
		{name: "pod on the node from another node", in: peer, verdict: tcActRedirect,
			want:    packettest.Build(t, delivered(peerFrame, podA)),
			counted: []Reason{ReasonFwdLocal}},
		{name: "TTL 1 to a pod on the node",
			in:      packettest.Build(t, change(peerFrame, func(f *packettest.Frame) { f.TTL = 1 })),
			verdict: tcActOK, counted: []Reason{ReasonToStack}},
		{name: "pod range address without endpoint",
			in: packettest.Build(t, change(peerFrame, func(f *packettest.Frame) {
				f.Dst = netip.MustParseAddr("10.200.0.9")
			})),
			verdict: tcActOK},
		{name: "IPv4 options cut short to a pod on the node",
			in: withByte(peer, 14, 0x4f)[:14+40], verdict: tcActOK},
		{name: "ARP", in: packettest.BuildARP(t, podA.arpFrom(testNodeIP)), verdict: tcActOK},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.check(t, e.dp.uplinkIngress, c)
		})
	}
}
