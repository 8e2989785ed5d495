package main

import (
	"bytes"
	"encoding/json"
	"net"
	"net/netip"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/vishvananda/netlink"

	"github.com/ferrynet/ferry/pkg/agent/agenttest"
	"github.com/ferrynet/ferry/pkg/datapath"
)

var (
	podMAC  = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x05}
	hostMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}
)

// fixture is a loaded dataplane with known contents, in a node namespace
// where the endpoint's interface is peer0.
type fixture struct {
	node      *agenttest.Node
	peerIndex int
	// synBytes is the length of the frame that masquerade sent.
	synBytes int
}

func newFixture(t *testing.T, configure bool) *fixture {
	t.Helper()
	node := agenttest.NewNode(t)
	f := &fixture{node: node}
	node.Do(t, func() error {
		peer, err := netlink.LinkByName(agenttest.PeerName)
		if err != nil {
			return err
		}
		f.peerIndex = peer.Attrs().Index
		return nil
	})

	dp, err := datapath.Load(node.BPFFSDir, datapath.LoadOptions{NATEntries: 4096})
	if err != nil {
		t.Fatalf("load dataplane: %v", err)
	}
	defer dp.Close()
	if !configure {
		return f
	}

	settings := datapath.NodeSettings{
		NodeIP:        netip.MustParseAddr("10.0.1.20"),
		PodCIDR:       netip.MustParsePrefix("10.200.0.0/24"),
		UplinkIfIndex: node.UplinkIndex,
		Masquerade:    true,
		NATPortMin:    32768,
		NATPortMax:    65535,
	}
	if err := dp.SetSettings(settings); err != nil {
		t.Fatal(err)
	}
	routes := []datapath.NodeRoute{
		{PodCIDR: netip.MustParsePrefix("10.200.2.0/24"), NodeIP: netip.MustParseAddr("10.0.2.20")},
		{PodCIDR: netip.MustParsePrefix("10.200.1.0/24"), NodeIP: netip.MustParseAddr("10.0.1.21")},
	}
	if err := dp.SyncNodeRoutes(routes); err != nil {
		t.Fatal(err)
	}
	if err := dp.SyncMasqueradeExclusions([]netip.Prefix{
		netip.MustParsePrefix("10.200.0.0/16"),
	}); err != nil {
		t.Fatal(err)
	}
	endpoints := []datapath.Endpoint{
		{IP: netip.MustParseAddr("10.200.0.5"), IfIndex: f.peerIndex, PodMAC: podMAC,
			HostMAC: hostMAC},
		// An endpoint whose interface is gone shows no name.
		{IP: netip.MustParseAddr("10.200.0.9"), IfIndex: 999, PodMAC: podMAC, HostMAC: hostMAC},
	}
	for _, ep := range endpoints {
		if err := dp.PutEndpoint(ep); err != nil {
			t.Fatal(err)
		}
	}
	f.masquerade(t)
	return f
}

// masquerade runs the pinned uplink egress program on a TCP SYN from a pod
// to an internet address, which creates the flow's two NAT entries.
func (f *fixture) masquerade(t *testing.T) {
	t.Helper()
	prog, err := ebpf.LoadPinnedProgram(filepath.Join(f.node.BPFFSDir, "progs", "uplink_egress"),
		nil)
	if err != nil {
		t.Fatalf("load pinned program: %v", err)
	}
	defer prog.Close()

	eth := &layers.Ethernet{SrcMAC: hostMAC, DstMAC: podMAC, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 63, Protocol: layers.IPProtocolTCP,
		SrcIP: net.IPv4(10, 200, 0, 5), DstIP: net.IPv4(203, 0, 113, 10)}
	tcp := &layers.TCP{SrcPort: 40000, DstPort: 443, SYN: true, Window: 64240}
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, eth, ip, tcp); err != nil {
		t.Fatal(err)
	}
	f.synBytes = len(buf.Bytes())
	ret, err := prog.Run(&ebpf.RunOptions{Data: buf.Bytes()})
	if err != nil {
		t.Fatalf("run uplink egress program: %v", err)
	}
	if ret != 0 { // TC_ACT_OK
		t.Fatalf("uplink egress program returned %d, want TC_ACT_OK", ret)
	}
}

// ferryctl runs the command inside the node's namespace, so that interface
// names resolve there, and returns its stdout.
func (f *fixture) ferryctl(t *testing.T, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	var code int
	f.node.Do(t, func() error {
		code = run(append([]string{"--bpffs-dir", f.node.BPFFSDir}, args...), &stdout, &stderr)
		return nil
	})
	if code != exitOK {
		t.Fatalf("ferryctl %v: exit status %d: %s", args, code, &stderr)
	}
	return stdout.String()
}

// fields splits table output into lines of space-separated fields.
func fields(out string) [][]string {
	var rows [][]string
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		rows = append(rows, regexp.MustCompile(`\s{2,}`).Split(strings.TrimSpace(line), -1))
	}
	return rows
}

func decodeJSON[T any](t *testing.T, out string) T {
	t.Helper()
	var v T
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decode JSON: %v\n%s", err, out)
	}
	return v
}

func TestStatusUnconfiguredDataplane(t *testing.T) {
	f := newFixture(t, false)
	var stdout, stderr bytes.Buffer
	code := run([]string{"--bpffs-dir", f.node.BPFFSDir, "status"}, &stdout, &stderr)
	if code != exitFailure {
		t.Errorf("exit status = %d, want %d", code, exitFailure)
	}
	if !strings.Contains(stderr.String(), "ferryd has not finished starting") {
		t.Errorf("stderr = %q, want a message that ferryd has not finished starting", &stderr)
	}
}

func TestRoutesOutput(t *testing.T) {
	f := newFixture(t, true)
	want := [][]string{
		{"POD CIDR", "NODE IP"},
		{"10.200.1.0/24", "10.0.1.21"},
		{"10.200.2.0/24", "10.0.2.20"},
	}
	if rows := fields(f.ferryctl(t, "routes")); !reflect.DeepEqual(rows, want) {
		t.Errorf("routes table = %q, want %q", rows, want)
	}

	// Options may also follow the command.
	got := decodeJSON[[]route](t, f.ferryctl(t, "routes", "-o", "json"))
	wantJSON := []route{{"10.200.1.0/24", "10.0.1.21"}, {"10.200.2.0/24", "10.0.2.20"}}
	if !reflect.DeepEqual(got, wantJSON) {
		t.Errorf("routes JSON = %+v, want %+v", got, wantJSON)
	}
}

func TestEndpointsOutput(t *testing.T) {
	f := newFixture(t, true)
	want := [][]string{
		{"IP", "IFINDEX", "IFNAME", "POD MAC", "HOST MAC"},
		{"10.200.0.5", strconv.Itoa(f.peerIndex), "peer0", "02:00:00:00:00:05", "02:00:00:00:00:01"},
		{"10.200.0.9", "999", "-", "02:00:00:00:00:05", "02:00:00:00:00:01"},
	}
	if rows := fields(f.ferryctl(t, "endpoints")); !reflect.DeepEqual(rows, want) {
		t.Errorf("endpoints table = %q, want %q", rows, want)
	}

	got := decodeJSON[[]endpoint](t, f.ferryctl(t, "-o", "json", "endpoints"))
	wantJSON := []endpoint{
		{"10.200.0.5", f.peerIndex, "peer0", "02:00:00:00:00:05", "02:00:00:00:00:01"},
		{"10.200.0.9", 999, "", "02:00:00:00:00:05", "02:00:00:00:00:01"},
	}
	if !reflect.DeepEqual(got, wantJSON) {
		t.Errorf("endpoints JSON = %+v, want %+v", got, wantJSON)
	}
}

func TestNATOutput(t *testing.T) {
	f := newFixture(t, true)
	rows := fields(f.ferryctl(t, "nat"))
	if len(rows) != 2 {
		t.Fatalf("nat table has %d lines, want a header and 1 flow: %q", len(rows), rows)
	}
	wantHeader := []string{"PROTO", "SRC", "DST", "NAT SRC", "STATE", "AGE", "IDLE"}
	if !reflect.DeepEqual(rows[0], wantHeader) {
		t.Errorf("nat header = %q, want %q", rows[0], wantHeader)
	}
	// The pod's source port is free on the node, so the masquerade keeps it.
	// Only the SYN has passed, so the flow is in its handshake.
	want := []string{"tcp", "10.200.0.5:40000", "203.0.113.10:443", "10.0.1.20:40000",
		"handshake"}
	if got := rows[1][:5]; !reflect.DeepEqual(got, want) {
		t.Errorf("nat row = %q, want %q", got, want)
	}
	if age := rows[1][5]; age != "0s" && age != "1s" {
		t.Errorf("nat row age = %q, want 0s or 1s", age)
	}

	got := decodeJSON[[]natFlow](t, f.ferryctl(t, "-o", "json", "nat"))
	if len(got) != 1 {
		t.Fatalf("nat JSON has %d flows, want 1: %+v", len(got), got)
	}
	flow := got[0]
	wantOriginal := natTuple{Src: "10.200.0.5:40000", Dst: "203.0.113.10:443"}
	wantTranslated := natTuple{Src: "10.0.1.20:40000", Dst: "203.0.113.10:443"}
	if flow.Proto != "tcp" || flow.Original != wantOriginal || flow.Translated != wantTranslated {
		t.Errorf("flow = %+v, want tcp %+v translated to %+v", flow, wantOriginal,
			wantTranslated)
	}
	if flow.State != "handshake" || !flow.Paired {
		t.Errorf("flow state %q, paired %t: want handshake, paired", flow.State, flow.Paired)
	}
	if flow.AgeSeconds < 0 || flow.AgeSeconds > 5 || flow.IdleSeconds > flow.AgeSeconds {
		t.Errorf("flow age %v s, idle %v s: want 0 <= idle <= age <= 5",
			flow.AgeSeconds, flow.IdleSeconds)
	}
}

func TestNATOutputPodFilter(t *testing.T) {
	f := newFixture(t, true)
	got := decodeJSON[[]natFlow](t, f.ferryctl(t, "-o", "json", "--pod", "10.200.0.5", "nat"))
	if len(got) != 1 || got[0].Original.Src != "10.200.0.5:40000" {
		t.Errorf("flows of pod 10.200.0.5 = %+v, want the one from 10.200.0.5:40000", got)
	}
	rows := fields(f.ferryctl(t, "nat", "--pod", "10.200.0.9"))
	if len(rows) != 1 {
		t.Errorf("flows of pod 10.200.0.9 = %q, want only the header", rows)
	}
}

func TestStatsOutput(t *testing.T) {
	f := newFixture(t, true)
	rows := fields(f.ferryctl(t, "stats"))
	if want := []string{"REASON", "PACKETS", "BYTES", "DROP"}; !reflect.DeepEqual(rows[0], want) {
		t.Errorf("stats header = %q, want %q", rows[0], want)
	}
	wantSNAT := []string{"snat", "1", strconv.Itoa(f.synBytes), "no"}
	var sawSNAT, sawDrop bool
	for _, row := range rows[1:] {
		switch {
		case row[0] == "snat":
			sawSNAT = true
			if !reflect.DeepEqual(row, wantSNAT) {
				t.Errorf("snat row = %q, want %q", row, wantSNAT)
			}
		case row[0] == "drop-spoofed-ip":
			sawDrop = true
			if want := []string{"drop-spoofed-ip", "0", "0", "yes"}; !reflect.DeepEqual(row, want) {
				t.Errorf("drop row = %q, want %q", row, want)
			}
		}
	}
	if !sawSNAT || !sawDrop {
		t.Errorf("stats lack the snat or drop-spoofed-ip row: %q", rows)
	}

	got := decodeJSON[[]counter](t, f.ferryctl(t, "-o", "json", "stats"))
	for _, c := range got {
		if c.Drop != strings.HasPrefix(c.Reason, "drop-") {
			t.Errorf("counter %s has drop = %v", c.Reason, c.Drop)
		}
		if c.Reason == "snat" && (c.Packets != 1 || c.Bytes != uint64(f.synBytes)) {
			t.Errorf("snat counter = %+v, want 1 packet of %d bytes", c, f.synBytes)
		}
	}
}
