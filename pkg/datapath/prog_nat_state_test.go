package datapath

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/gopacket/layers"

	"github.com/ferrynet/ferry/internal/packettest"
)

// flowStateOf returns the state of the flow that f's pod started.
func flowStateOf(t *testing.T, e *progEnv, f natFlow) NATState {
	t.Helper()

	flows, err := e.dp.NATFlows()
	if err != nil {
		t.Fatalf("list NAT flows: %v", err)
	}
	want := netip.AddrPortFrom(f.pod, f.podPort)
	for _, fl := range flows {
		if fl.Original.Src == want && fl.Original.Dst.Addr() == f.remote &&
			fl.Proto == uint8(f.proto) {
			if !fl.Paired {
				t.Errorf("flow from %s has no ingress entry", want)
			}
			return fl.State
		}
	}
	t.Fatalf("no NAT flow from %s", want)
	return 0
}

func TestProgNATFlowStates(t *testing.T) {
	e := newProgEnv(t)
	podA := e.podA
	send := func(t *testing.T, egress bool, frame packettest.Frame) {
		t.Helper()
		prog := e.dp.uplinkIngress
		if egress {
			prog = e.dp.uplinkEgress
		}
		if verdict, _ := e.run(t, prog, packettest.Build(t, frame), 0); verdict == tcActShot {
			t.Fatalf("packet dropped")
		}
	}
	withFlags := func(f packettest.Frame, flags uint8) packettest.Frame {
		f.TCPFlags = flags
		return f
	}
	type step struct {
		egress bool
		flags  uint8
		want   NATState
	}
	tcpCases := []struct {
		name  string
		steps []step
	}{
		{"closed by the remote end", []step{
			{true, packettest.SYN, NATTCPHandshake},
			{false, packettest.SYN | packettest.ACK, NATTCPEstablished},
			{true, packettest.ACK, NATTCPEstablished},
			{false, packettest.FIN | packettest.ACK, NATTCPClosing},
			{true, packettest.FIN | packettest.ACK, NATTCPClosing},
			// The pod opens a new connection on the same tuple.
			{true, packettest.SYN, NATTCPHandshake},
			{false, packettest.SYN | packettest.ACK, NATTCPEstablished},
		}},
		{"reset by the pod", []step{
			{true, packettest.SYN, NATTCPHandshake},
			{false, packettest.SYN | packettest.ACK, NATTCPEstablished},
			{true, packettest.RST, NATTCPClosing},
		}},
		{"reset by the remote end in the handshake", []step{
			{true, packettest.SYN, NATTCPHandshake},
			{false, packettest.RST | packettest.ACK, NATTCPClosing},
		}},
	}
	for i, c := range tcpCases {
		t.Run(c.name, func(t *testing.T) {
			f := synFlow(podA.IP, uint16(43000+i))
			for j, s := range c.steps {
				frame := withFlags(f.replyFrame(f.podPort), s.flags)
				if s.egress {
					frame = withFlags(f.egressFrame(), s.flags)
				}
				send(t, s.egress, frame)
				if got := flowStateOf(t, e, f); got != s.want {
					t.Errorf("after step %d (flags %#x): state %s, want %s", j, s.flags, got,
						s.want)
				}
			}
		})
	}

	for _, f := range []natFlow{
		{pod: podA.IP, proto: layers.IPProtocolUDP, podPort: 5500, remote: testDNS,
			remotePort: 53, payload: []byte("query")},
		{pod: podA.IP, proto: layers.IPProtocolICMPv4, podPort: 0x5500, remote: testRemote1,
			payload: []byte("ping")},
	} {
		t.Run(f.proto.String(), func(t *testing.T) {
			send(t, true, f.egressFrame())
			if got := flowStateOf(t, e, f); got != NATUnreplied {
				t.Errorf("state %s after the request, want %s", got, NATUnreplied)
			}
			send(t, false, f.replyFrame(f.podPort))
			if got := flowStateOf(t, e, f); got != NATReplied {
				t.Errorf("state %s after the reply, want %s", got, NATReplied)
			}
		})
	}
}

// putFlow writes the two entries of a flow from pod:port to 203.0.113.50:443
// that was last used idle ago, in the given state.
func (e *progEnv) putFlow(t *testing.T, proto layers.IPProtocol, port uint16, state NATState,
	idle time.Duration) {
	t.Helper()

	f := natFlow{pod: e.podB.IP, proto: proto, podPort: port,
		remote: netip.MustParseAddr("203.0.113.50"), remotePort: 443}
	out, in := f.natKeys(port)
	now := uint64(monotonicNow())
	last := now - uint64(idle)
	created := last - uint64(time.Second)
	outValue := hostNatEntry{Addr: be32(testNodeIP), Port: be16(port), Created: created,
		LastSeen: last}
	inValue := hostNatEntry{Addr: be32(f.pod), Port: be16(port), Created: created,
		LastSeen: created}
	switch state {
	case NATTCPHandshake:
		outValue.TcpFlags = tcpSYN
	case NATTCPEstablished:
		outValue.TcpFlags = tcpSYN
		inValue.TcpFlags = tcpSYN
	case NATTCPClosing:
		outValue.TcpFlags = tcpSYN | tcpFIN
		inValue.TcpFlags = tcpSYN
	case NATReplied:
		inValue.LastSeen = last
	}
	if err := e.dp.natTable.Put(out, outValue); err != nil {
		t.Fatalf("add egress entry: %v", err)
	}
	if err := e.dp.natTable.Put(in, inValue); err != nil {
		t.Fatalf("add ingress entry: %v", err)
	}
}

func TestProgExpireNATUnderPressure(t *testing.T) {
	e := newProgEnv(t)
	tcp, udp := layers.IPProtocolTCP, layers.IPProtocolUDP

	// A live flow that the programs created: established and in use.
	live := synFlow(e.podA.IP, 44000)
	live.keepPort = true
	livePort, ok := e.checkSNAT(t, live)
	if !ok {
		t.Fatalf("live flow was not translated")
	}
	synAck := change(live.replyFrame(livePort), func(f *packettest.Frame) {
		f.TCPFlags = packettest.SYN | packettest.ACK
	})
	if verdict, _ := e.run(t, e.dp.uplinkIngress, packettest.Build(t, synAck),
		0); verdict != tcActRedirect {
		t.Fatalf("SYN-ACK of the live flow: verdict %d", verdict)
	}

	// Below three quarters of the table, nothing goes before its timeout.
	for i := range 100 {
		e.putFlow(t, tcp, uint16(1000+i), NATTCPClosing, 10*time.Second)
	}
	removed, err := e.dp.ExpireNAT(DefaultNATTimeouts)
	if err != nil {
		t.Fatalf("expire NAT flows: %v", err)
	}
	if removed != 0 {
		t.Errorf("ExpireNAT removed %d flows from a table that is not under pressure, want 0",
			removed)
	}

	// Fill the table beyond three quarters: 2*1581 of 4096 entries.
	reclaimable := 100
	for i := range 1400 {
		e.putFlow(t, tcp, uint16(2000+i), NATTCPClosing, 10*time.Second)
		reclaimable++
	}
	for i := range 20 {
		e.putFlow(t, udp, uint16(4000+i), NATUnreplied, 10*time.Second)
		reclaimable++
		e.putFlow(t, tcp, uint16(5000+i), NATTCPEstablished, 10*time.Second)
		e.putFlow(t, udp, uint16(6000+i), NATReplied, 10*time.Second)
		e.putFlow(t, tcp, uint16(7000+i), NATTCPHandshake, time.Second)
	}
	before := len(natEntries(t, e))
	if before*4 <= int(e.dp.NATCapacity())*3 {
		t.Fatalf("NAT table has %d of %d entries, want more than three quarters", before,
			e.dp.NATCapacity())
	}

	removed, err = e.dp.ExpireNAT(DefaultNATTimeouts)
	if err != nil {
		t.Fatalf("expire NAT flows: %v", err)
	}
	if removed != reclaimable {
		t.Errorf("ExpireNAT removed %d flows, want the %d closing or unanswered ones",
			removed, reclaimable)
	}
	flows, err := e.dp.NATFlows()
	if err != nil {
		t.Fatalf("list NAT flows: %v", err)
	}
	states := map[NATState]int{}
	for _, f := range flows {
		states[f.State]++
		if !f.Paired {
			t.Errorf("flow %+v lost its ingress entry", f)
		}
	}
	want := map[NATState]int{NATTCPEstablished: 21, NATReplied: 20, NATTCPHandshake: 20}
	for s, n := range want {
		if states[s] != n {
			t.Errorf("%d %s flows remain, want %d", states[s], s, n)
		}
	}
	if got := len(natEntries(t, e)); got != 2*len(flows) {
		t.Errorf("NAT table has %d entries for %d flows, want two per flow", got, len(flows))
	}

	// The live flow keeps its node port.
	ack := change(live.egressFrame(), func(f *packettest.Frame) { f.TCPFlags = packettest.ACK })
	e.check(t, e.dp.uplinkEgress, progCase{
		in:      packettest.Build(t, ack),
		verdict: tcActOK,
		want:    packettest.Build(t, live.snatted(ack, livePort)),
		counted: []Reason{ReasonSNAT},
	})
}
