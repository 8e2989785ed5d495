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

// laterFragment describes a fragment after the first: an IPv4 header and a
// piece of the datagram's payload, without L4 header.
type laterFragment struct {
	srcMAC, dstMAC net.HardwareAddr
	src, dst       netip.Addr
	ttl            uint8
	id             uint16
	proto          layers.IPProtocol
	offset         uint16 // in 8-byte units
	more           bool
	data           []byte
}

func buildLaterFragment(t *testing.T, f laterFragment) []byte {
	t.Helper()

	eth := &layers.Ethernet{SrcMAC: f.srcMAC, DstMAC: f.dstMAC,
		EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: f.ttl, Id: f.id, Protocol: f.proto,
		FragOffset: f.offset, SrcIP: f.src.AsSlice(), DstIP: f.dst.AsSlice()}
	if f.more {
		ip.Flags = layers.IPv4MoreFragments
	}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{ComputeChecksums: true, FixLengths: true}
	if err := gopacket.SerializeLayers(buf, opts, eth, ip, gopacket.Payload(f.data)); err != nil {
		t.Fatalf("serialize fragment: %v", err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

func TestProgNATFragmentsEgress(t *testing.T) {
	e := newProgEnv(t)
	podA := e.podA
	f := natFlow{pod: podA.IP, proto: layers.IPProtocolUDP, podPort: 5300, remote: testDNS,
		remotePort: 53, firstFragment: true, payload: bytes.Repeat([]byte("a"), 64),
		keepPort: true}
	if _, ok := e.checkSNAT(t, f); !ok {
		t.Fatalf("first fragment was not translated")
	}
	first := f.egressFrame()
	later := laterFragment{srcMAC: testUplinkMAC, dstMAC: testPeerNodeMAC, src: podA.IP,
		dst: testDNS, ttl: 63, id: first.IPID, proto: layers.IPProtocolUDP, offset: 9,
		more: true, data: bytes.Repeat([]byte("b"), 64)}
	last := change(later, func(l *laterFragment) { l.offset, l.more = 17, false })

	for name, frag := range map[string]laterFragment{"middle": later, "last": last} {
		t.Run(name, func(t *testing.T) {
			want := change(frag, func(l *laterFragment) { l.src = testNodeIP })
			e.check(t, e.dp.uplinkEgress, progCase{
				in:      buildLaterFragment(t, frag),
				verdict: tcActOK,
				want:    buildLaterFragment(t, want),
				counted: []Reason{ReasonSNATFragment},
			})
		})
	}

	entriesBefore := len(natEntries(t, e))
	cases := []progCase{
		{name: "datagram whose first fragment was not seen", verdict: tcActShot,
			in: buildLaterFragment(t, change(later, func(l *laterFragment) {
				l.id++
			})),
			counted: []Reason{ReasonDropFragUntracked}},
		{name: "same IP ID from another pod", verdict: tcActShot,
			in: buildLaterFragment(t, change(later, func(l *laterFragment) {
				l.src = e.podB.IP
			})),
			counted: []Reason{ReasonDropFragUntracked}},
		{name: "same IP ID of another protocol", verdict: tcActShot,
			in: buildLaterFragment(t, change(later, func(l *laterFragment) {
				l.proto = layers.IPProtocolTCP
			})),
			counted: []Reason{ReasonDropFragUntracked}},
		{name: "fragment of the node", verdict: tcActOK,
			in: buildLaterFragment(t, change(later, func(l *laterFragment) {
				l.src = testNodeIP
			}))},
		{name: "fragment to an excluded destination", verdict: tcActOK,
			in: buildLaterFragment(t, change(later, func(l *laterFragment) {
				l.dst = netip.MustParseAddr("10.200.1.5")
			}))},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.check(t, e.dp.uplinkEgress, c)
		})
	}
	if got := len(natEntries(t, e)); got != entriesBefore {
		t.Errorf("NAT table has %d entries, want %d as before", got, entriesBefore)
	}
}

func TestProgNATFragmentsIngress(t *testing.T) {
	e := newProgEnv(t)
	podA := e.podA
	f := natFlow{pod: podA.IP, proto: layers.IPProtocolUDP, podPort: 5400, remote: testDNS,
		remotePort: 53, payload: []byte("query"), keepPort: true, target: &podA}
	port, ok := e.checkSNAT(t, f)
	if !ok {
		t.Fatalf("query was not translated")
	}

	// A large reply, fragmented by the remote end.
	first := f.replyFrame(port)
	first.MoreFragments = true
	first.Payload = bytes.Repeat([]byte("r"), 64)
	later := laterFragment{srcMAC: testPeerNodeMAC, dstMAC: testUplinkMAC, src: testDNS,
		dst: testNodeIP, ttl: 60, id: first.IPID, proto: layers.IPProtocolUDP, offset: 9,
		data: bytes.Repeat([]byte("s"), 64)}
	translated := func(l laterFragment) []byte {
		l.dst = podA.IP
		l.srcMAC, l.dstMAC = podA.HostMAC, podA.PodMAC
		l.ttl--
		return buildLaterFragment(t, l)
	}

	t.Run("later fragment before the first", func(t *testing.T) {
		// Unknown to the table, the fragment goes to the node's stack, unchanged.
		e.check(t, e.dp.uplinkIngress, progCase{in: buildLaterFragment(t, later),
			verdict: tcActOK})
	})
	t.Run("first fragment", func(t *testing.T) {
		want := f.replyTranslated(port)
		want.MoreFragments = true
		want.Payload = first.Payload
		e.check(t, e.dp.uplinkIngress, progCase{
			in:      packettest.Build(t, first),
			verdict: tcActRedirect,
			want:    packettest.Build(t, want),
			counted: []Reason{ReasonRevSNAT, ReasonFwdLocal},
		})
	})
	t.Run("later fragment", func(t *testing.T) {
		e.check(t, e.dp.uplinkIngress, progCase{
			in:      buildLaterFragment(t, later),
			verdict: tcActRedirect,
			want:    translated(later),
			counted: []Reason{ReasonRevSNATFragment, ReasonFwdLocal},
		})
	})
	t.Run("later fragment of another datagram", func(t *testing.T) {
		e.check(t, e.dp.uplinkIngress, progCase{
			in:      buildLaterFragment(t, change(later, func(l *laterFragment) { l.id++ })),
			verdict: tcActOK,
		})
	})
}
