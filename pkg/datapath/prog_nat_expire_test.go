package datapath

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/gopacket/layers"

	"github.com/ferrynet/ferry/internal/packettest"
)

func TestProgExpireNAT(t *testing.T) {
	e := newProgEnv(t)
	podA, podB := e.podA, e.podB

	udpFlow := func(port uint16) natFlow {
		return natFlow{pod: podA.IP, proto: layers.IPProtocolUDP, podPort: port,
			remote: testDNS, remotePort: 53, payload: []byte("query"), target: &podA}
	}
	flows := map[string]natFlow{
		"idle UDP":               udpFlow(6000),
		"UDP used on egress":     udpFlow(6001),
		"TCP reset":              synFlow(podB.IP, 40000),
		"TCP used on ingress":    synFlow(podB.IP, 40001),
		"idle TCP":               synFlow(podB.IP, 40002),
		"idle ICMP echo request": podEchoFlow(podA),
	}
	nodePorts := map[string]uint16{}
	for name, f := range flows {
		// No two flows share a pod port, so every translation keeps the port.
		f.keepPort = true
		flows[name] = f
		port, ok := e.checkSNAT(t, f)
		if !ok {
			t.Fatalf("%s: first packet was not translated", name)
		}
		nodePorts[name] = port
	}
	reset := flows["TCP reset"]
	rst := change(reset.egressFrame(), func(f *packettest.Frame) { f.TCPFlags = packettest.RST })
	if verdict, _ := e.run(t, e.dp.uplinkEgress, packettest.Build(t, rst), 0); verdict != tcActOK {
		t.Fatalf("TCP RST: verdict %d, want %d", verdict, tcActOK)
	}

	// Ingress entries left without an egress entry by a failed claim.
	orphanOld := orphanIngressKey(40500)
	orphanNew := orphanIngressKey(40501)
	e.putOrphan(t, orphanOld, uint64(monotonicNow()))

	const timeout = 200 * time.Millisecond
	time.Sleep(timeout + 100*time.Millisecond)

	e.putOrphan(t, orphanNew, uint64(monotonicNow()))
	used := flows["UDP used on egress"]
	if verdict, _ := e.run(t, e.dp.uplinkEgress, packettest.Build(t, used.egressFrame()),
		0); verdict != tcActOK {
		t.Fatalf("UDP on egress: verdict %d, want %d", verdict, tcActOK)
	}
	answered := flows["TCP used on ingress"]
	reply := packettest.Build(t, answered.replyFrame(nodePorts["TCP used on ingress"]))
	if verdict, _ := e.run(t, e.dp.uplinkIngress, reply, 0); verdict != tcActRedirect {
		t.Fatalf("TCP reply: verdict %d, want %d", verdict, tcActRedirect)
	}

	removed, err := e.dp.ExpireNAT(NATTimeouts{
		TCPHandshake:   time.Hour,
		TCPEstablished: time.Hour,
		TCPClosing:     timeout,
		UDP:            timeout,
		ICMP:           timeout,
	})
	if err != nil {
		t.Fatalf("expire NAT entries: %v", err)
	}
	if removed != 3 {
		t.Errorf("ExpireNAT removed %d flows, want 3", removed)
	}

	remaining := map[hostNatKey]bool{}
	var (
		key   hostNatKey
		value hostNatEntry
	)
	iter := e.dp.natTable.Iterate()
	for iter.Next(&key, &value) {
		remaining[key] = true
	}
	if err := iter.Err(); err != nil {
		t.Fatalf("list NAT entries: %v", err)
	}
	wantKept := map[string]bool{
		"idle UDP":               false,
		"UDP used on egress":     true,
		"TCP reset":              false,
		"TCP used on ingress":    true,
		"idle TCP":               true,
		"idle ICMP echo request": false,
	}
	for name, f := range flows {
		out, in := f.natKeys(nodePorts[name])
		if remaining[out] != wantKept[name] {
			t.Errorf("%s: egress entry present %t, want %t", name, remaining[out], wantKept[name])
		}
		if remaining[in] != wantKept[name] {
			t.Errorf("%s: ingress entry present %t, want %t", name, remaining[in], wantKept[name])
		}
	}
	if remaining[orphanOld] {
		t.Errorf("idle ingress entry without egress entry was kept")
	}
	if !remaining[orphanNew] {
		t.Errorf("recent ingress entry without egress entry was removed")
	}
	if got, want := len(remaining), 2*3+1; got != want {
		t.Errorf("NAT table has %d entries, want %d", got, want)
	}

	t.Run("reply to an expired flow", func(t *testing.T) {
		idle := flows["idle UDP"]
		e.check(t, e.dp.uplinkIngress, progCase{
			in:      packettest.Build(t, idle.replyFrame(nodePorts["idle UDP"])),
			verdict: tcActOK,
		})
	})
	t.Run("expired flow starts again", func(t *testing.T) {
		e.checkSNAT(t, flows["idle UDP"])
	})
}

// podEchoFlow returns an ICMP echo flow from pod to 203.0.113.10.
func podEchoFlow(pod testPod) natFlow {
	return natFlow{pod: pod.IP, proto: layers.IPProtocolICMPv4, podPort: 0x4321,
		remote: testRemote1, payload: []byte("ping"), target: &pod}
}

// natKeys returns the keys of the flow's egress and ingress entries, as
// nat_mapping in headers/nat.h writes them.
func (f natFlow) natKeys(nodePort uint16) (out, in hostNatKey) {
	out = hostNatKey{
		Saddr: be32(f.pod),
		Daddr: be32(f.remote),
		Sport: be16(f.podPort),
		Dport: be16(f.remotePort),
		Proto: uint8(f.proto),
		Dir:   uint8(NATEgress),
	}
	in = hostNatKey{
		Saddr: be32(f.remote),
		Daddr: be32(testNodeIP),
		Sport: be16(f.remotePort),
		Dport: be16(nodePort),
		Proto: uint8(f.proto),
		Dir:   uint8(NATIngress),
	}
	return out, in
}

// orphanIngressKey returns the key of an ingress entry whose egress entry
// does not exist.
func orphanIngressKey(nodePort uint16) hostNatKey {
	return hostNatKey{
		Saddr: be32(netip.MustParseAddr("203.0.113.20")),
		Daddr: be32(testNodeIP),
		Sport: be16(443),
		Dport: be16(nodePort),
		Proto: uint8(layers.IPProtocolTCP),
		Dir:   uint8(NATIngress),
	}
}

func (e *progEnv) putOrphan(t *testing.T, key hostNatKey, lastSeen uint64) {
	t.Helper()

	value := hostNatEntry{
		Addr:     be32(e.podA.IP),
		Port:     be16(40000),
		Created:  lastSeen,
		LastSeen: lastSeen,
	}
	if err := e.dp.natTable.Put(key, value); err != nil {
		t.Fatalf("add NAT entry: %v", err)
	}
}
