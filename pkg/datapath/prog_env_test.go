package datapath

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/containernetworking/plugins/pkg/utils/sysctl"
	"github.com/vishvananda/netlink"

	"github.com/ferrynet/ferry/internal/packettest"
)

// Verdicts of TC programs, from linux/pkt_cls.h.
const (
	tcActOK       uint32 = 0
	tcActShot     uint32 = 2
	tcActRedirect uint32 = 7
)

// Addresses of the test node. The uplink is one end of a veth pair inside
// the test namespace, and the other end carries the peer node's MAC.
var (
	testNodeIP     = netip.MustParseAddr("10.0.1.20")
	testPeerNodeIP = netip.MustParseAddr("10.0.1.21") // has a neighbour entry
	testPodCIDR    = netip.MustParsePrefix("10.200.0.0/24")

	testUplinkMAC   = mustMAC("02:00:00:00:01:20")
	testPeerNodeMAC = mustMAC("02:00:00:00:01:21")
	testOtherMAC    = mustMAC("02:00:00:00:0e:0e")
)

const (
	testNATPortMin = 32768
	testNATPortMax = 65535
)

func mustMAC(s string) net.HardwareAddr {
	mac, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return mac
}

// testPod is a pod on the test node: an endpoint whose host side is a veth
// in the test namespace.
type testPod struct {
	Endpoint
	hostIfName string
}

// progEnv is a loaded dataplane with a fresh network namespace in which its
// programs run, so that FIB and socket lookups see only what the test made.
type progEnv struct {
	netns    ns.NetNS
	dp       *Datapath
	uplink   int // ifindex of the uplink in netns
	podA     testPod
	podB     testPod
	settings NodeSettings
}

// newProgEnv creates the namespace and its links, loads the dataplane under
// a new directory on /sys/fs/bpf and writes the node's settings, both pods'
// endpoints, the node routes and the masquerade exclusions 10.200.0.0/16 and
// 10.0.1.21/32.
func newProgEnv(t testing.TB) *progEnv {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: loading BPF programs and creating network namespaces needs root")
	}

	netns, err := testutils.NewNS()
	if err != nil {
		t.Fatalf("create network namespace: %v", err)
	}
	t.Cleanup(func() {
		_ = netns.Close()
		if err := testutils.UnmountNS(netns); err != nil {
			t.Errorf("remove network namespace: %v", err)
		}
	})

	e := &progEnv{
		netns: netns,
		podA: testPod{
			Endpoint: Endpoint{
				IP:      netip.MustParseAddr("10.200.0.2"),
				PodMAC:  mustMAC("02:00:00:00:00:02"),
				HostMAC: mustMAC("02:00:00:00:a0:02"),
			},
			hostIfName: "hosta",
		},
		podB: testPod{
			Endpoint: Endpoint{
				IP:      netip.MustParseAddr("10.200.0.3"),
				PodMAC:  mustMAC("02:00:00:00:00:03"),
				HostMAC: mustMAC("02:00:00:00:a0:03"),
			},
			hostIfName: "hostb",
		},
	}
	if err := netns.Do(func(ns.NetNS) error { return e.createLinks() }); err != nil {
		t.Fatalf("create links in the test namespace: %v", err)
	}

	dir, err := os.MkdirTemp("/sys/fs/bpf", "ferry-progtest-")
	if err != nil {
		t.Fatalf("create bpffs directory: %v", err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove bpffs directory: %v", err)
		}
	})
	dp, err := Load(dir, LoadOptions{NATEntries: 4096})
	if err != nil {
		t.Fatalf("load dataplane: %v", err)
	}
	t.Cleanup(func() { _ = dp.Close() })
	e.dp = dp

	e.settings = NodeSettings{
		NodeIP:        testNodeIP,
		PodCIDR:       testPodCIDR,
		UplinkIfIndex: e.uplink,
		Masquerade:    true,
		NATPortMin:    testNATPortMin,
		NATPortMax:    testNATPortMax,
	}
	if err := dp.SetSettings(e.settings); err != nil {
		t.Fatalf("write settings: %v", err)
	}
	for _, pod := range []testPod{e.podA, e.podB} {
		if err := dp.PutEndpoint(pod.Endpoint); err != nil {
			t.Fatalf("add endpoint: %v", err)
		}
	}
	routes := []NodeRoute{
		{PodCIDR: netip.MustParsePrefix("10.200.1.0/24"), NodeIP: testPeerNodeIP},
		// No neighbour entry: the FIB lookup returns BPF_FIB_LKUP_RET_NO_NEIGH.
		{PodCIDR: netip.MustParsePrefix("10.200.2.0/24"),
			NodeIP: netip.MustParseAddr("10.0.1.22")},
		// A range that names this node.
		{PodCIDR: netip.MustParsePrefix("10.200.3.0/24"), NodeIP: testNodeIP},
		// No route in the namespace leads to this node.
		{PodCIDR: netip.MustParsePrefix("10.200.4.0/24"),
			NodeIP: netip.MustParseAddr("198.51.100.7")},
	}
	if err := dp.SyncNodeRoutes(routes); err != nil {
		t.Fatalf("write node routes: %v", err)
	}
	exclusions := []netip.Prefix{
		netip.MustParsePrefix("10.200.0.0/16"),
		netip.PrefixFrom(testPeerNodeIP, 32),
	}
	if err := dp.SyncMasqueradeExclusions(exclusions); err != nil {
		t.Fatalf("write masquerade exclusions: %v", err)
	}
	return e
}

// createLinks runs inside the test namespace. It creates the uplink with the
// node IP and a permanent neighbour entry for the peer node, and the host
// sides of both pods' veths, and enables IPv4 forwarding, which
// bpf_fib_lookup requires on the uplink.
func (e *progEnv) createLinks() error {
	uplink := &netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: "uplink0", HardwareAddr: testUplinkMAC},
		PeerName:         "peer0",
		PeerHardwareAddr: testPeerNodeMAC,
	}
	if err := netlink.LinkAdd(uplink); err != nil {
		return fmt.Errorf("add uplink veth: %w", err)
	}
	for _, pod := range []*testPod{&e.podA, &e.podB} {
		veth := &netlink.Veth{
			LinkAttrs:        netlink.LinkAttrs{Name: pod.hostIfName, HardwareAddr: pod.HostMAC},
			PeerName:         pod.hostIfName + "p",
			PeerHardwareAddr: pod.PodMAC,
		}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("add veth %s: %w", pod.hostIfName, err)
		}
		link, err := netlink.LinkByName(pod.hostIfName)
		if err != nil {
			return fmt.Errorf("find veth %s: %w", pod.hostIfName, err)
		}
		pod.IfIndex = link.Attrs().Index
	}

	var link netlink.Link
	for _, name := range []string{"peer0", "uplink0"} {
		var err error
		link, err = netlink.LinkByName(name)
		if err != nil {
			return fmt.Errorf("find %s: %w", name, err)
		}
		if err := netlink.LinkSetUp(link); err != nil {
			return fmt.Errorf("set %s up: %w", name, err)
		}
	}
	e.uplink = link.Attrs().Index
	addr := &netlink.Addr{IPNet: &net.IPNet{
		IP:   testNodeIP.AsSlice(),
		Mask: net.CIDRMask(24, 32),
	}}
	if err := netlink.AddrAdd(link, addr); err != nil {
		return fmt.Errorf("add node IP: %w", err)
	}
	neigh := &netlink.Neigh{
		LinkIndex:    e.uplink,
		State:        netlink.NUD_PERMANENT,
		IP:           testPeerNodeIP.AsSlice(),
		HardwareAddr: testPeerNodeMAC,
	}
	if err := netlink.NeighAdd(neigh); err != nil {
		return fmt.Errorf("add neighbour %s: %w", testPeerNodeIP, err)
	}
	if _, err := sysctl.Sysctl("net/ipv4/ip_forward", "1"); err != nil {
		return fmt.Errorf("enable forwarding: %w", err)
	}
	return nil
}

// skbContext is the start of struct __sk_buff up to ifindex. The kernel
// resolves ifindex to the device of the test run's skb (the namespace's
// loopback device when it is zero) and rejects a context with EINVAL when a
// field that a test run cannot set, such as len, is not zero.
type skbContext struct {
	Len            uint32
	PktType        uint32
	Mark           uint32
	QueueMapping   uint32
	Protocol       uint32
	VlanPresent    uint32
	VlanTCI        uint32
	VlanProto      uint32
	Priority       uint32
	IngressIfindex uint32
	Ifindex        uint32
}

// run runs prog once on frame inside the test namespace, with skb->ifindex
// set to ifindex unless it is zero, and returns the verdict and the frame
// that the program left.
func (e *progEnv) run(t *testing.T, prog *ebpf.Program, frame []byte,
	ifindex int) (uint32, []byte) {
	t.Helper()

	out := make([]byte, len(frame)+256)
	opts := &ebpf.RunOptions{Data: frame, DataOut: out}
	if ifindex != 0 {
		opts.Context = skbContext{Ifindex: uint32(ifindex)}
	}
	var verdict uint32
	err := e.netns.Do(func(ns.NetNS) error {
		var err error
		verdict, err = prog.Run(opts)
		return err
	})
	if err != nil {
		t.Fatalf("run program %s: %v", prog, err)
	}
	return verdict, opts.DataOut
}

// counters returns the packets and bytes counted so far, by reason.
func (e *progEnv) counters(t *testing.T) map[Reason]Counter {
	t.Helper()

	list, err := e.dp.Counters()
	if err != nil {
		t.Fatalf("read counters: %v", err)
	}
	out := make(map[Reason]Counter, len(list))
	for _, c := range list {
		out[c.Reason] = c
	}
	return out
}

// progCase is one frame run through one program.
type progCase struct {
	name    string
	ifindex int // skb->ifindex; zero runs on the loopback device
	in      []byte
	verdict uint32
	// want is the expected output frame. Nil expects the input unchanged,
	// unless the verdict is TC_ACT_SHOT, because the kernel discards that frame.
	want []byte
	// counted lists the reasons that must count this frame once; all other
	// counters must stay the same.
	counted []Reason
}

// check runs c through prog and compares verdict, output frame and counters.
// A frame that the program changed must carry valid IPv4 and L4 checksums.
func (e *progEnv) check(t *testing.T, prog *ebpf.Program, c progCase) []byte {
	t.Helper()

	before := e.counters(t)
	verdict, out := e.run(t, prog, c.in, c.ifindex)
	after := e.counters(t)
	checkResult(t, c, verdict, out, before, after)
	return out
}

// checkResult compares the verdict and output frame of a run of c, and the
// counters before and after it, with what c expects.
func checkResult(t *testing.T, c progCase, verdict uint32, out []byte,
	before, after map[Reason]Counter) {
	t.Helper()

	if verdict != c.verdict {
		t.Errorf("verdict %d, want %d", verdict, c.verdict)
	}
	want := c.want
	if want == nil && c.verdict != tcActShot {
		want = c.in
	}
	if want != nil {
		if diff := packettest.Diff(want, out); diff != "" {
			t.Errorf("output frame differs from the expected one:\n%s", diff)
		}
	}
	if c.want != nil && packettest.IsIPv4(c.want) {
		if err := packettest.CheckIPv4Checksums(out); err != nil {
			t.Errorf("output frame: %v", err)
		}
	}
	checkCounted(t, before, after, c.counted, uint64(len(c.in)))
}

// checkCounted requires each reason in counted to have grown by one packet
// of frameLen bytes between before and after, and every other reason to be
// unchanged.
func checkCounted(t *testing.T, before, after map[Reason]Counter, counted []Reason,
	frameLen uint64) {
	t.Helper()

	want := map[Reason]bool{}
	for _, r := range counted {
		want[r] = true
	}
	for r, a := range after {
		b := before[r]
		var wantPackets, wantBytes uint64
		if want[r] {
			wantPackets, wantBytes = 1, frameLen
		}
		if got := a.Packets - b.Packets; got != wantPackets {
			t.Errorf("counter %s grew by %d packets, want %d", r, got, wantPackets)
		}
		if got := a.Bytes - b.Bytes; got != wantBytes {
			t.Errorf("counter %s grew by %d bytes, want %d", r, got, wantBytes)
		}
	}
}
