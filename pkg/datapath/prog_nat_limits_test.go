package datapath

import (
	"net/netip"
	"testing"

	"github.com/google/gopacket/layers"

	"github.com/ferrynet/ferry/internal/packettest"
)

// synFlow returns a TCP flow from pod:podPort to 203.0.113.10:80.
func synFlow(pod netip.Addr, podPort uint16) natFlow {
	return natFlow{pod: pod, proto: layers.IPProtocolTCP, podPort: podPort,
		remote: testRemote1, remotePort: 80, payload: []byte("syn")}
}

func TestProgMasqueradeOff(t *testing.T) {
	e := newProgEnv(t)
	settings := e.settings
	settings.Masquerade = false
	if err := e.dp.SetSettings(settings); err != nil {
		t.Fatalf("write settings: %v", err)
	}

	e.check(t, e.dp.uplinkEgress, progCase{
		in:      packettest.Build(t, synFlow(e.podA.IP, 40000).egressFrame()),
		verdict: tcActOK,
	})
	if entries := natEntries(t, e); len(entries) != 0 {
		t.Errorf("NAT table has %d entries, want none: %+v", len(entries), entries)
	}
}

func TestProgWithoutSettings(t *testing.T) {
	e := newProgEnv(t)
	// ferryd has not written the settings yet: node_config holds zeros.
	if err := e.dp.nodeConfig.Put(uint32(0), hostNodeSettings{}); err != nil {
		t.Fatalf("clear settings: %v", err)
	}
	toRemotePod := e.podA.tcpFrom(netip.MustParseAddr("10.200.1.5"))
	fromPeer := change(e.podA.tcpFrom(e.podB.IP), func(f *packettest.Frame) {
		f.Src = netip.MustParseAddr("10.200.1.5")
		f.SrcMAC, f.DstMAC = testPeerNodeMAC, testUplinkMAC
	})

	t.Run("egress", func(t *testing.T) {
		e.check(t, e.dp.uplinkEgress, progCase{
			in:      packettest.Build(t, synFlow(e.podA.IP, 40000).egressFrame()),
			verdict: tcActOK,
		})
	})
	t.Run("ingress to a pod on the node", func(t *testing.T) {
		e.check(t, e.dp.uplinkIngress, progCase{
			in:      packettest.Build(t, fromPeer),
			verdict: tcActOK,
		})
	})
	t.Run("pod to a pod on another node", func(t *testing.T) {
		e.check(t, e.dp.fromPod, progCase{
			ifindex: e.podA.IfIndex,
			in:      packettest.Build(t, toRemotePod),
			verdict: tcActOK,
			counted: []Reason{ReasonToStack},
		})
	})
	t.Run("pod to a pod on the node", func(t *testing.T) {
		toB := e.podA.tcpFrom(e.podB.IP)
		e.check(t, e.dp.fromPod, progCase{
			ifindex: e.podA.IfIndex,
			in:      packettest.Build(t, toB),
			verdict: tcActRedirect,
			want:    packettest.Build(t, delivered(toB, e.podB)),
			counted: []Reason{ReasonFwdLocal},
		})
	})
	if entries := natEntries(t, e); len(entries) != 0 {
		t.Errorf("NAT table has %d entries, want none: %+v", len(entries), entries)
	}
}

func TestProgMasqueradePortsExhausted(t *testing.T) {
	e := newProgEnv(t)
	settings := e.settings
	settings.NATPortMin, settings.NATPortMax = 50000, 50000
	if err := e.dp.SetSettings(settings); err != nil {
		t.Fatalf("write settings: %v", err)
	}

	first := synFlow(e.podA.IP, 40000)
	first.keepPort = true
	if port, ok := e.checkSNAT(t, first); ok && port != 40000 {
		t.Fatalf("first flow got node port %d, want 40000", port)
	}
	second := synFlow(e.podB.IP, 40000)
	if port, ok := e.checkSNAT(t, second); ok && port != 50000 {
		t.Fatalf("second flow got node port %d, want 50000, the only one in the range", port)
	}

	c := progCase{
		in:      packettest.Build(t, synFlow(netip.MustParseAddr("10.200.0.9"), 40000).egressFrame()),
		verdict: tcActShot,
		counted: []Reason{ReasonDropNATNoPort},
	}
	before := e.counters(t)
	verdict, out := e.run(t, e.dp.uplinkEgress, c.in, 0)
	after := e.counters(t)
	if got := after[ReasonNATPortRetry].Packets - before[ReasonNATPortRetry].Packets; got != 31 {
		t.Errorf("counted %d port retries, want 31: every try after the first", got)
	}
	after[ReasonNATPortRetry] = before[ReasonNATPortRetry]
	checkResult(t, c, verdict, out, before, after)
	if got := len(natEntries(t, e)); got != 4 {
		t.Errorf("NAT table has %d entries, want 4 for the two translated flows", got)
	}
}

func TestProgMasqueradeTableFull(t *testing.T) {
	e := newProgEnv(t)
	early := synFlow(e.podA.IP, 40000)
	early.keepPort = true
	port, ok := e.checkSNAT(t, early)
	if !ok {
		t.Fatalf("first flow was not translated")
	}

	// Fill the table with ingress entries of flows to another remote host.
	capacity := int(e.dp.NATCapacity())
	for i := 2; i < capacity; i++ {
		key := hostNatKey{
			Saddr: be32(netip.MustParseAddr("198.51.100.99")),
			Daddr: be32(testNodeIP),
			Sport: be16(uint16(i)),
			Dport: be16(443),
			Proto: uint8(layers.IPProtocolTCP),
			Dir:   uint8(NATIngress),
		}
		value := hostNatEntry{Addr: be32(e.podB.IP), Port: be16(uint16(i)), LastSeen: 1}
		if err := e.dp.natTable.Put(key, value); err != nil {
			t.Fatalf("fill NAT entry %d of %d: %v", i, capacity, err)
		}
	}

	t.Run("new flow", func(t *testing.T) {
		e.check(t, e.dp.uplinkEgress, progCase{
			in:      packettest.Build(t, synFlow(e.podB.IP, 40001).egressFrame()),
			verdict: tcActShot,
			counted: []Reason{ReasonDropNATTableFull},
		})
	})
	t.Run("flow mapped before", func(t *testing.T) {
		ack := change(early.egressFrame(), func(f *packettest.Frame) { f.TCPFlags = packettest.ACK })
		e.check(t, e.dp.uplinkEgress, progCase{
			in:      packettest.Build(t, ack),
			verdict: tcActOK,
			want:    packettest.Build(t, early.snatted(ack, port)),
			counted: []Reason{ReasonSNAT},
		})
	})
}
