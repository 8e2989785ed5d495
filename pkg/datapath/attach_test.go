package datapath

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: loads BPF programs and creates network namespaces")
	}
}

// testNode is a network namespace with a veth pair standing for the uplink
// and a pod's host-side interface, and a private bpffs directory.
type testNode struct {
	ns     ns.NetNS
	dir    string
	uplink int
	podIf  int
}

func newTestNode(t *testing.T) *testNode {
	t.Helper()
	requireRoot(t)

	netns, err := testutils.NewNS()
	if err != nil {
		t.Fatalf("create netns: %v", err)
	}
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	n := &testNode{ns: netns, dir: "/sys/fs/bpf/ferry-test-" + hex.EncodeToString(suffix)}
	t.Cleanup(func() {
		_ = netns.Do(func(ns.NetNS) error { return Remove(n.dir) })
		_ = os.RemoveAll(n.dir)
		_ = netns.Close()
		_ = testutils.UnmountNS(netns)
	})

	err = netns.Do(func(ns.NetNS) error {
		for _, pair := range [][2]string{{"eth0", "peer0"}, {"fypod", "peer1"}} {
			veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: pair[0]}, PeerName: pair[1]}
			if err := netlink.LinkAdd(veth); err != nil {
				return err
			}
			if err := netlink.LinkSetUp(veth); err != nil {
				return err
			}
		}
		up, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		pod, err := netlink.LinkByName("fypod")
		if err != nil {
			return err
		}
		n.uplink, n.podIf = up.Attrs().Index, pod.Attrs().Index
		return nil
	})
	if err != nil {
		t.Fatalf("create interfaces: %v", err)
	}
	return n
}

// load loads the dataplane and attaches it in mode, as one agent start does.
func (n *testNode) start(t *testing.T, mode AttachMode) AttachMode {
	t.Helper()
	var used AttachMode
	err := n.ns.Do(func(ns.NetNS) error {
		d, err := Load(n.dir, LoadOptions{NATEntries: 1024})
		if err != nil {
			return err
		}
		defer d.Close()
		used, err = d.AttachUplink(n.uplink, mode)
		if err != nil {
			return err
		}
		if err := AttachPod(n.dir, "fypod", n.podIf, used); err != nil {
			return err
		}
		_, err = d.UpdatePods(used)
		return err
	})
	if err != nil {
		t.Fatalf("start dataplane in %s mode: %v", mode, err)
	}
	return used
}

// setUplink writes node settings that name the uplink, as ferryd does. Remove
// finds the uplink's cls_bpf filters through them.
func (n *testNode) setUplink(t *testing.T) {
	t.Helper()
	m, err := OpenMaps(n.dir)
	if err != nil {
		t.Fatalf("open maps: %v", err)
	}
	defer m.Close()
	err = m.SetSettings(NodeSettings{
		NodeIP:        testNodeIP,
		PodCIDR:       testPodCIDR,
		UplinkIfIndex: n.uplink,
		NATPortMin:    testNATPortMin,
		NATPortMax:    testNATPortMax,
	})
	if err != nil {
		t.Fatalf("write node settings: %v", err)
	}
}

// haveTCX reports whether the kernel attaches tcx links (Linux 6.6 and
// later), by trying on the node's uplink.
func (n *testNode) haveTCX(t *testing.T) bool {
	t.Helper()
	var supported bool
	err := n.ns.Do(func(ns.NetNS) error {
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
			Type:         ebpf.SchedCLS,
			Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
			License:      "GPL",
		})
		if err != nil {
			return err
		}
		defer prog.Close()
		supported = tcxSupported(prog, n.uplink)
		return nil
	})
	if err != nil {
		t.Fatalf("probe tcx: %v", err)
	}
	return supported
}

func (n *testNode) requireTCX(t *testing.T) {
	t.Helper()
	if !n.haveTCX(t) {
		t.Skip("skipping: the kernel has no tcx links (Linux 6.6 and later have them)")
	}
}

func tcxPrograms(t *testing.T, n *testNode, ifindex int, attach ebpf.AttachType) int {
	t.Helper()
	var count int
	err := n.ns.Do(func(ns.NetNS) error {
		res, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: attach})
		if err != nil {
			return err
		}
		count = len(res.Programs)
		return nil
	})
	if err != nil {
		t.Fatalf("query tcx programs: %v", err)
	}
	return count
}

func clsactFilters(t *testing.T, n *testNode, ifindex int, parent uint32) int {
	t.Helper()
	var count int
	err := n.ns.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByIndex(ifindex)
		if err != nil {
			return err
		}
		filters, err := netlink.FilterList(l, parent)
		if err != nil {
			return err
		}
		count = len(filters)
		return nil
	})
	if err != nil {
		t.Fatalf("list filters: %v", err)
	}
	return count
}

func TestAttachTCXIdempotent(t *testing.T) {
	n := newTestNode(t)
	n.requireTCX(t)
	for i := 0; i < 3; i++ {
		if used := n.start(t, AttachTCX); used != AttachTCX {
			t.Fatalf("start %d attached in %s mode, want tcx", i, used)
		}
	}

	if got := tcxPrograms(t, n, n.uplink, ebpf.AttachTCXIngress); got != 1 {
		t.Errorf("uplink ingress has %d tcx programs after 3 starts, want 1", got)
	}
	if got := tcxPrograms(t, n, n.uplink, ebpf.AttachTCXEgress); got != 1 {
		t.Errorf("uplink egress has %d tcx programs after 3 starts, want 1", got)
	}
	if got := tcxPrograms(t, n, n.podIf, ebpf.AttachTCXIngress); got != 1 {
		t.Errorf("pod veth has %d tcx programs after 3 starts, want 1", got)
	}
}

func TestAttachClsactIdempotent(t *testing.T) {
	n := newTestNode(t)
	for i := 0; i < 3; i++ {
		n.start(t, AttachClsact)
	}

	if got := clsactFilters(t, n, n.uplink, netlink.HANDLE_MIN_INGRESS); got != 1 {
		t.Errorf("uplink ingress has %d filters after 3 starts, want 1", got)
	}
	if got := clsactFilters(t, n, n.uplink, netlink.HANDLE_MIN_EGRESS); got != 1 {
		t.Errorf("uplink egress has %d filters after 3 starts, want 1", got)
	}
	if got := clsactFilters(t, n, n.podIf, netlink.HANDLE_MIN_INGRESS); got != 1 {
		t.Errorf("pod veth has %d filters after 3 starts, want 1", got)
	}
	if !n.haveTCX(t) {
		return
	}
	if got := tcxPrograms(t, n, n.uplink, ebpf.AttachTCXIngress); got != 0 {
		t.Errorf("uplink ingress has %d tcx programs in clsact mode, want 0", got)
	}
}

// TestAttachAutoWithoutTCX runs on kernels before 6.6, such as Debian 12's
// 6.1 in the test VM: auto mode must fall back to cls_bpf filters on clsact.
func TestAttachAutoWithoutTCX(t *testing.T) {
	n := newTestNode(t)
	if n.haveTCX(t) {
		t.Skip("skipping: the kernel has tcx links")
	}
	for i := 0; i < 2; i++ {
		if used := n.start(t, AttachAuto); used != AttachClsact {
			t.Fatalf("start %d in auto mode attached in %s mode, want clsact", i, used)
		}
	}

	if got := clsactFilters(t, n, n.uplink, netlink.HANDLE_MIN_INGRESS); got != 1 {
		t.Errorf("uplink ingress has %d filters after 2 starts, want 1", got)
	}
	if got := clsactFilters(t, n, n.uplink, netlink.HANDLE_MIN_EGRESS); got != 1 {
		t.Errorf("uplink egress has %d filters after 2 starts, want 1", got)
	}
	if got := clsactFilters(t, n, n.podIf, netlink.HANDLE_MIN_INGRESS); got != 1 {
		t.Errorf("pod veth has %d filters after 2 starts, want 1", got)
	}
}

func TestAttachModeSwitch(t *testing.T) {
	n := newTestNode(t)
	n.requireTCX(t)
	n.start(t, AttachClsact)
	n.start(t, AttachTCX)

	if got := clsactFilters(t, n, n.uplink, netlink.HANDLE_MIN_INGRESS); got != 0 {
		t.Errorf("uplink ingress keeps %d cls_bpf filters after switching to tcx, want 0", got)
	}
	if got := tcxPrograms(t, n, n.uplink, ebpf.AttachTCXIngress); got != 1 {
		t.Errorf("uplink ingress has %d tcx programs, want 1", got)
	}
}

func TestForeignFilterKept(t *testing.T) {
	n := newTestNode(t)
	// Another program's filter on the uplink, at a priority of its own.
	err := n.ns.Do(func(ns.NetNS) error {
		if err := ensureClsact(n.uplink); err != nil {
			return err
		}
		out, err := exec.Command("tc", "filter", "add", "dev", "eth0", "ingress",
			"pref", "10", "protocol", "all", "u32", "match", "u32", "0", "0").CombinedOutput()
		if err != nil {
			t.Logf("tc: %s", out)
		}
		return err
	})
	if err != nil {
		t.Fatalf("add foreign filter: %v", err)
	}

	n.start(t, AttachClsact)
	n.setUplink(t)
	tcx := n.haveTCX(t)
	if tcx {
		n.start(t, AttachTCX)
	}
	if err := n.ns.Do(func(ns.NetNS) error { return Remove(n.dir) }); err != nil {
		t.Fatalf("remove dataplane: %v", err)
	}

	if got := clsactFilters(t, n, n.uplink, netlink.HANDLE_MIN_INGRESS); got != 1 {
		t.Errorf("uplink ingress has %d filters after ferry left, want the foreign one", got)
	}
	if !tcx {
		return
	}
	if got := tcxPrograms(t, n, n.uplink, ebpf.AttachTCXIngress); got != 0 {
		t.Errorf("uplink ingress has %d tcx programs after Remove, want 0", got)
	}
}

func TestRemoveDeletesPins(t *testing.T) {
	n := newTestNode(t)
	n.requireTCX(t)
	n.start(t, AttachTCX)
	for _, name := range []string{"node_routes", "endpoints", "nat_table", "counters",
		filepath.Join(progsDir, progFromPod), filepath.Join(linksDir, linkUplinkIngress)} {
		if _, err := os.Stat(filepath.Join(n.dir, name)); err != nil {
			t.Errorf("pin %s missing after start: %v", name, err)
		}
	}

	if err := n.ns.Do(func(ns.NetNS) error { return Remove(n.dir) }); err != nil {
		t.Fatalf("remove dataplane: %v", err)
	}
	if _, err := os.Stat(n.dir); !os.IsNotExist(err) {
		t.Errorf("bpffs directory %s still exists after Remove", n.dir)
	}
	if got := tcxPrograms(t, n, n.podIf, ebpf.AttachTCXIngress); got != 0 {
		t.Errorf("pod veth has %d tcx programs after Remove, want 0", got)
	}
}

func TestOpenMapsNotLoaded(t *testing.T) {
	requireRoot(t)
	_, err := OpenMaps(filepath.Join(t.TempDir(), "none"))
	if err == nil || !strings.Contains(err.Error(), ErrNotLoaded.Error()) {
		t.Fatalf("OpenMaps on an empty directory: got %v, want ErrNotLoaded", err)
	}
}
