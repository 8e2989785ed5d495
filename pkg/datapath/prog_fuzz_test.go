package datapath

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/ferrynet/ferry/internal/packettest"
)

// Hooks that a fuzz input selects with its first value.
const (
	fuzzEgress  uint8 = 0
	fuzzIngress uint8 = 1
)

// Frames that prog.Run accepts: an Ethernet header at least, and a size the
// kernel takes without complaint.
const (
	fuzzMinFrame = 14
	fuzzMaxFrame = 1600
)

// fuzzFlows are the flows whose mappings the fuzz target creates first, so
// that replies, ICMP errors and fragments in the corpus find them.
func fuzzFlows(e *progEnv) []natFlow {
	tcp, udp, icmp := layers.IPProtocolTCP, layers.IPProtocolUDP, layers.IPProtocolICMPv4
	return []natFlow{
		{pod: e.podA.IP, proto: tcp, podPort: 40000, remote: testRemote1, remotePort: 80,
			payload: bytes.Repeat([]byte("t"), 600), target: &e.podA},
		{pod: e.podA.IP, proto: udp, podPort: 5000, remote: testDNS, remotePort: 53,
			payload: []byte("query"), target: &e.podA},
		{pod: e.podB.IP, proto: icmp, podPort: 0x1234, remote: testRemote1,
			payload: []byte("ping"), target: &e.podB},
		{pod: e.podB.IP, proto: udp, podPort: 5004, remote: testDNS, remotePort: 53,
			firstFragment: true, payload: bytes.Repeat([]byte("f"), 64), target: &e.podB},
	}
}

// fuzzSeeds returns the frames of the committed corpus by name: well-formed
// packets of every case the programs translate, and cut or damaged ones.
// The mappings of fuzzFlows keep their pods' ports, which the seeds assume.
func fuzzSeeds(t *testing.T, e *progEnv) map[string]struct {
	hook  uint8
	frame []byte
} {
	flows := fuzzFlows(e)
	tcpFlow, udpFlow, echoFlow, fragFlow := flows[0], flows[1], flows[2], flows[3]
	build := func(f packettest.Frame) []byte { return packettest.Build(t, f) }
	sent := build(tcpFlow.snatted(tcpFlow.egressFrame(), tcpFlow.podPort))
	errorAbout := func(quote []byte, typ, code uint8) []byte {
		return buildICMPError(t, icmpError{srcMAC: testPeerNodeMAC, dstMAC: testUplinkMAC,
			src: testRouter, dst: testNodeIP, ttl: 60, typ: typ, code: code, mtu: 1400,
			quote: quote})
	}
	laterIn := laterFragment{srcMAC: testPeerNodeMAC, dstMAC: testUplinkMAC, src: testDNS,
		dst: testNodeIP, ttl: 60, id: 0x99, proto: layers.IPProtocolUDP, offset: 9,
		data: bytes.Repeat([]byte("s"), 40)}
	laterOut := laterFragment{srcMAC: testUplinkMAC, dstMAC: testPeerNodeMAC,
		src: fragFlow.pod, dst: testDNS, ttl: 63, id: 0x77, proto: layers.IPProtocolUDP,
		offset: 9, data: bytes.Repeat([]byte("g"), 40)}
	firstReply := udpFlow.replyFrame(udpFlow.podPort)
	firstReply.MoreFragments = true
	podToRemote := synFlow(e.podB.IP, 40500).egressFrame()
	nodeSYN := nodeFlow(layers.IPProtocolTCP, 40000, testRemote1, 80).egressFrame()

	type seed = struct {
		hook  uint8
		frame []byte
	}
	return map[string]seed{
		"egress-tcp-syn":          {fuzzEgress, build(podToRemote)},
		"egress-tcp-cut":          {fuzzEgress, build(podToRemote)[:14+20+10]},
		"egress-udp":              {fuzzEgress, build(udpFlow.egressFrame())},
		"egress-icmp-echo":        {fuzzEgress, build(echoFlow.egressFrame())},
		"egress-node-syn":         {fuzzEgress, build(nodeSYN)},
		"egress-first-fragment":   {fuzzEgress, build(fragFlow.egressFrame())},
		"egress-later-fragment":   {fuzzEgress, buildLaterFragment(t, laterOut)},
		"egress-ihl-too-long":     {fuzzEgress, withByte(build(podToRemote), 14, 0x4f)},
		"egress-arp":              {fuzzEgress, packettest.BuildARP(t, e.podA.arpFrom(testNodeIP))},
		"ingress-tcp-reply":       {fuzzIngress, build(tcpFlow.replyFrame(tcpFlow.podPort))},
		"ingress-udp-reply":       {fuzzIngress, build(udpFlow.replyFrame(udpFlow.podPort))},
		"ingress-echo-reply":      {fuzzIngress, build(echoFlow.replyFrame(echoFlow.podPort))},
		"ingress-first-fragment":  {fuzzIngress, build(firstReply)},
		"ingress-later-fragment":  {fuzzIngress, buildLaterFragment(t, laterIn)},
		"ingress-frag-needed":     {fuzzIngress, errorAbout(quoteOf(sent, 548), 3, 4)},
		"ingress-time-exceeded":   {fuzzIngress, errorAbout(quoteOf(sent, 28), 11, 0)},
		"ingress-error-ports":     {fuzzIngress, errorAbout(quoteOf(sent, 24), 3, 3)},
		"ingress-error-cut":       {fuzzIngress, errorAbout(quoteOf(sent, 28), 3, 3)[:14+20+8+10]},
		"ingress-error-inner-ihl": {fuzzIngress, errorAbout(withByte(quoteOf(sent, 28), 0, 0x4f), 3, 3)},
	}
}

// FuzzUplinkPrograms feeds frames to the uplink programs after a few flows
// were masqueraded. Whatever the frame, a program must return a verdict it
// can return, count every drop under exactly one drop reason, redirect only
// to a pod that owns the frame's destination, keep the frame's length, and
// keep valid checksums valid.
func FuzzUplinkPrograms(f *testing.F) {
	e := newProgEnv(f)
	f.Fuzz(func(t *testing.T, hook uint8, frame []byte) {
		if len(frame) < fuzzMinFrame || len(frame) > fuzzMaxFrame {
			t.Skipf("skipping: the target runs frames of %d to %d bytes", fuzzMinFrame,
				fuzzMaxFrame)
		}
		e.ensureFuzzFlows(t)
		prog := e.dp.uplinkEgress
		if hook%2 == fuzzIngress {
			prog = e.dp.uplinkIngress
		}
		before := e.counters(t)
		out := make([]byte, len(frame)+256)
		opts := &ebpf.RunOptions{Data: frame, DataOut: out}
		var verdict uint32
		err := e.netns.Do(func(ns.NetNS) error {
			var err error
			verdict, err = prog.Run(opts)
			return err
		})
		if errors.Is(err, unix.EINVAL) {
			// The kernel rejects some frames before the program runs, such
			// as an IPv4 frame of only an Ethernet header.
			t.Skipf("skipping: the kernel rejects the frame: %v", err)
		}
		if err != nil {
			t.Fatalf("run program %s: %v", prog, err)
		}
		out = opts.DataOut
		after := e.counters(t)
		checkFuzzResult(t, e, hook%2, frame, verdict, out, before, after)
	})
}

// ensureFuzzFlows creates the mappings of fuzzFlows unless they exist.
func (e *progEnv) ensureFuzzFlows(t *testing.T) {
	t.Helper()
	for _, fl := range fuzzFlows(e) {
		out, _ := fl.natKeys(fl.podPort)
		var value hostNatEntry
		if e.dp.natTable.Lookup(out, &value) == nil {
			continue
		}
		if verdict, _ := e.run(t, e.dp.uplinkEgress, packettest.Build(t, fl.egressFrame()),
			0); verdict != tcActOK {
			t.Fatalf("create mapping from %s:%d: verdict %d", fl.pod, fl.podPort, verdict)
		}
	}
}

func checkFuzzResult(t *testing.T, e *progEnv, hook uint8, in []byte, verdict uint32,
	out []byte, before, after map[Reason]Counter) {
	t.Helper()

	var drops uint64
	for r, a := range after {
		if r.IsDrop() {
			drops += a.Packets - before[r].Packets
		}
	}
	switch verdict {
	case tcActShot:
		if drops != 1 {
			t.Errorf("dropped frame counted %d times under drop reasons, want 1", drops)
		}
		return
	case tcActOK:
	case tcActRedirect:
		if hook == fuzzEgress {
			t.Errorf("egress program redirected a frame")
		}
	default:
		t.Fatalf("verdict %d, want TC_ACT_OK, TC_ACT_SHOT or TC_ACT_REDIRECT", verdict)
	}
	if drops != 0 {
		t.Errorf("frame passed but %d drops were counted", drops)
	}
	if len(out) != len(in) {
		t.Fatalf("output frame has %d bytes, input %d", len(out), len(in))
	}
	if verdict == tcActRedirect {
		checkRedirectTarget(t, e, out)
	}
	if bytes.Equal(in, out) {
		return
	}
	if !packettest.IsIPv4(in) {
		t.Fatalf("program changed a frame that is not IPv4")
	}
	if validIPv4Header(in) && !validIPv4Header(out) {
		t.Errorf("valid IPv4 header checksum became invalid")
	}
	if packettest.CheckIPv4Checksums(in) == nil {
		if err := packettest.CheckIPv4Checksums(out); err != nil {
			t.Errorf("valid frame became invalid: %v", err)
		}
	}
}

// checkRedirectTarget requires a redirected frame to be addressed to a pod
// of the test node, with the MACs of that pod's veth.
func checkRedirectTarget(t *testing.T, e *progEnv, out []byte) {
	t.Helper()

	if !packettest.IsIPv4(out) || len(out) < 14+20 {
		t.Fatalf("redirected frame is not IPv4")
	}
	dst := netip.AddrFrom4([4]byte(out[14+16 : 14+20]))
	for _, pod := range []testPod{e.podA, e.podB} {
		if dst != pod.IP {
			continue
		}
		if !bytes.Equal(out[0:6], pod.PodMAC) || !bytes.Equal(out[6:12], pod.HostMAC) {
			t.Errorf("frame to %s redirected with MACs %x -> %x, want the pod's veth", dst,
				out[6:12], out[0:6])
		}
		return
	}
	t.Errorf("frame to %s redirected, which is no pod of the node", dst)
}

func validIPv4Header(frame []byte) bool {
	if !packettest.IsIPv4(frame) || len(frame) < 14+20 {
		return false
	}
	ihl := packettest.IPv4HeaderLen(frame)
	if ihl < 20 || 14+ihl > len(frame) {
		return false
	}
	var sum uint32
	for i := 14; i < 14+ihl; i += 2 {
		sum += uint32(frame[i])<<8 | uint32(frame[i+1])
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return sum == 0xffff
}

// TestWriteFuzzSeeds writes the corpus of FuzzUplinkPrograms into testdata
// when FERRY_WRITE_FUZZ_SEEDS is set; the committed files came from it.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("FERRY_WRITE_FUZZ_SEEDS") == "" {
		t.Skip("skipping: set FERRY_WRITE_FUZZ_SEEDS=1 to rewrite the fuzz corpus")
	}
	e := newProgEnv(t)
	dir := filepath.Join("testdata", "fuzz", "FuzzUplinkPrograms")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, s := range fuzzSeeds(t, e) {
		data := fmt.Sprintf("go test fuzz v1\nbyte(%q)\n[]byte(%q)\n", rune(s.hook), s.frame)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
