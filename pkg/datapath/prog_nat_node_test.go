package datapath

import (
	"net/netip"
	"testing"

	"github.com/google/gopacket/layers"

	"github.com/ferrynet/ferry/internal/packettest"
)

// nodeFlow returns a flow that the node itself opens from nodePort.
func nodeFlow(proto layers.IPProtocol, nodePort uint16, remote netip.Addr,
	remotePort uint16) natFlow {
	return natFlow{pod: testNodeIP, proto: proto, podPort: nodePort, remote: remote,
		remotePort: remotePort, payload: []byte("from the node")}
}

// checkNodeEgress runs the first packet of a node flow through the egress
// program. Without collision it must leave unchanged; otherwise it must get
// another port, counted as snat-node-port. It returns the port on the wire.
func (e *progEnv) checkNodeEgress(t *testing.T, f natFlow, wantMoved bool) uint16 {
	t.Helper()

	in := packettest.Build(t, f.egressFrame())
	before := e.counters(t)
	verdict, out := e.run(t, e.dp.uplinkEgress, in, 0)
	after := e.counters(t)
	_, port, _ := decodeIPv4(t, out)
	if !wantMoved {
		if port != f.podPort {
			t.Errorf("node port %d, want the node's own %d", port, f.podPort)
		}
		checkPortRetries(t, before, after, true)
		checkResult(t, progCase{in: in, verdict: tcActOK}, verdict, out, before, after)
		return port
	}
	if port == f.podPort || port < testNATPortMin || port > testNATPortMax {
		t.Errorf("node port %d, want another one in %d-%d", port, testNATPortMin,
			testNATPortMax)
	}
	checkPortRetries(t, before, after, false)
	want := packettest.Build(t, f.snatted(f.egressFrame(), port))
	checkResult(t, progCase{in: in, verdict: tcActOK, want: want,
		counted: []Reason{ReasonSNATNodePort}}, verdict, out, before, after)
	return port
}

// nodeReply returns the remote end's reply to a node flow as it arrives on
// port, and as the node's stack must get it.
func nodeReply(f natFlow, port uint16) (arrived, translated packettest.Frame) {
	arrived = f.replyFrame(port)
	translated = f.replyTranslated(port)
	return arrived, translated
}

func TestProgNATNodeFlows(t *testing.T) {
	e := newProgEnv(t)
	podA, podB := e.podA, e.podB
	tcp, udp, icmp := layers.IPProtocolTCP, layers.IPProtocolUDP, layers.IPProtocolICMPv4

	podTCP := natFlow{pod: podA.IP, proto: tcp, podPort: 42000, remote: testRemote1,
		remotePort: 80, payload: []byte("syn"), keepPort: true, target: &podA}
	podUDP := natFlow{pod: podA.IP, proto: udp, podPort: 42001, remote: testDNS,
		remotePort: 53, payload: []byte("query"), keepPort: true, target: &podA}
	podEcho := natFlow{pod: podA.IP, proto: icmp, podPort: 0, remote: testRemote1,
		payload: []byte("ping"), keepPort: true, target: &podA}
	for _, f := range []natFlow{podTCP, podUDP, podEcho} {
		if _, ok := e.checkSNAT(t, f); !ok {
			t.Fatalf("pod flow from port %d was not translated", f.podPort)
		}
	}

	moved := map[string]struct {
		flow natFlow
		port uint16
	}{}
	t.Run("node flows on ports that mappings hold", func(t *testing.T) {
		for name, f := range map[string]natFlow{
			"TCP SYN":                         nodeFlow(tcp, 42000, testRemote1, 80),
			"UDP":                             nodeFlow(udp, 42001, testDNS, 53),
			"ICMP echo request, identifier 0": nodeFlow(icmp, 0, testRemote1, 0),
		} {
			t.Run(name, func(t *testing.T) {
				port := e.checkNodeEgress(t, f, true)
				moved[name] = struct {
					flow natFlow
					port uint16
				}{f, port}
			})
		}
	})

	t.Run("replies to moved node flows", func(t *testing.T) {
		for name, m := range moved {
			t.Run(name, func(t *testing.T) {
				arrived, translated := nodeReply(m.flow, m.port)
				e.check(t, e.dp.uplinkIngress, progCase{
					in:      packettest.Build(t, arrived),
					verdict: tcActOK,
					want:    packettest.Build(t, translated),
					counted: []Reason{ReasonRevSNAT},
				})
			})
		}
	})

	t.Run("replies to the pod flows", func(t *testing.T) {
		for _, f := range []natFlow{podTCP, podUDP, podEcho} {
			e.check(t, e.dp.uplinkIngress, progCase{
				in:      packettest.Build(t, f.replyFrame(f.podPort)),
				verdict: tcActRedirect,
				want:    packettest.Build(t, f.replyTranslated(f.podPort)),
				counted: []Reason{ReasonRevSNAT, ReasonFwdLocal},
			})
		}
	})

	t.Run("later packet of a moved node flow", func(t *testing.T) {
		m, ok := moved["TCP SYN"]
		if !ok {
			t.Skip("skipping: the node's SYN was not moved")
		}
		ack := change(m.flow.egressFrame(), func(f *packettest.Frame) {
			f.TCPFlags = packettest.ACK
		})
		e.check(t, e.dp.uplinkEgress, progCase{
			in:      packettest.Build(t, ack),
			verdict: tcActOK,
			want:    packettest.Build(t, m.flow.snatted(ack, m.port)),
			counted: []Reason{ReasonSNATNodePort},
		})
	})

	t.Run("node TCP and UDP on free ports", func(t *testing.T) {
		before := len(natEntries(t, e))
		e.checkNodeEgress(t, nodeFlow(tcp, 42100, testRemote1, 80), false)
		e.checkNodeEgress(t, nodeFlow(udp, 42000, testDNS, 53), false)
		e.checkNodeEgress(t, nodeFlow(tcp, 42000, testRemote2, 80), false)
		if got := len(natEntries(t, e)); got != before {
			t.Errorf("NAT table has %d entries, want %d: node flows on free ports need none",
				got, before)
		}
	})

	// The node pings first with an identifier that a pod then uses too.
	nodeEcho := nodeFlow(icmp, 0x4444, testRemote2, 0)
	podBEcho := natFlow{pod: podB.IP, proto: icmp, podPort: 0x4444, remote: testRemote2,
		payload: []byte("ping"), target: &podB}
	var podBPort uint16
	t.Run("node echo request claims its identifier", func(t *testing.T) {
		before := len(natEntries(t, e))
		e.checkNodeEgress(t, nodeEcho, false)
		if got := len(natEntries(t, e)); got != before+2 {
			t.Errorf("NAT table has %d entries, want %d: the node's identifier is claimed",
				got, before+2)
		}
		var ok bool
		podBPort, ok = e.checkSNAT(t, podBEcho)
		if !ok {
			t.Fatalf("pod echo request was not translated")
		}
	})
	t.Run("echo reply to the node", func(t *testing.T) {
		e.check(t, e.dp.uplinkIngress, progCase{
			in:      packettest.Build(t, nodeEcho.replyFrame(0x4444)),
			verdict: tcActOK,
		})
	})
	t.Run("echo reply to the pod", func(t *testing.T) {
		e.check(t, e.dp.uplinkIngress, progCase{
			in:      packettest.Build(t, podBEcho.replyFrame(podBPort)),
			verdict: tcActRedirect,
			want:    packettest.Build(t, podBEcho.replyTranslated(podBPort)),
			counted: []Reason{ReasonRevSNAT, ReasonFwdLocal},
		})
	})
	t.Run("second echo request of the node", func(t *testing.T) {
		e.checkNodeEgress(t, nodeEcho, false)
	})
}
