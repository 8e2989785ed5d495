// Package agenttest builds a simulated node for tests of ferryd: a network
// namespace with a veth uplink, a bpffs directory and CNI directories of its
// own, all removed when the test ends. It needs root; NewNode skips the test
// otherwise.
package agenttest

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/ferrynet/ferry/pkg/datapath"
)

// Addresses of the simulated node. The uplink eth0 has UplinkAddr on the
// node subnet 10.0.1.0/24 and a default route via Gateway. Its veth peer,
// PeerName, stays in the namespace without an address.
const (
	UplinkName = "eth0"
	PeerName   = "peer0"
	UplinkAddr = "10.0.1.20/24"
	Gateway    = "10.0.1.1"
	UplinkMTU  = 1450
)

// namePrefix starts the names of the namespaces and bpffs directories that
// this package creates, followed by the creating process's pid, so that a
// later run finds and removes what a crashed one left behind.
const namePrefix = "ferryagt-"

const netnsDir = "/run/netns"

// Node is a simulated node.
type Node struct {
	// NSName is the namespace's name in `ip netns list`; NSPath its bind mount.
	NSName string
	NSPath string
	// BPFFSDir is a fresh directory under /sys/fs/bpf for the node's pins.
	BPFFSDir string
	// Dir is a temporary directory with the CNI directories below.
	Dir         string
	ConfDir     string
	BinDir      string
	IPAMDataDir string
	// UplinkIndex is the ifindex of eth0 inside the namespace.
	UplinkIndex int

	netns ns.NetNS
}

// RequireRoot skips the test unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: creating network namespaces and loading BPF programs needs root")
	}
}

// NewNode creates a simulated node and registers its removal with t.Cleanup.
func NewNode(t testing.TB) *Node {
	t.Helper()
	RequireRoot(t)
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("skipping: the ip command of iproute2 is not installed")
	}
	removeLeftovers(t)

	suffix := fmt.Sprintf("%d-%08x", os.Getpid(), rand.Uint32())
	n := &Node{
		NSName:   namePrefix + suffix,
		BPFFSDir: filepath.Join("/sys/fs/bpf", namePrefix+suffix),
		Dir:      t.TempDir(),
		NSPath:   filepath.Join(netnsDir, namePrefix+suffix),
	}
	n.ConfDir = filepath.Join(n.Dir, "net.d")
	n.BinDir = filepath.Join(n.Dir, "bin")
	n.IPAMDataDir = filepath.Join(n.Dir, "networks")

	if out, err := exec.Command("ip", "netns", "add", n.NSName).CombinedOutput(); err != nil {
		t.Fatalf("create namespace %s: %v: %s", n.NSName, err, out)
	}
	t.Cleanup(func() { n.remove(t) })

	netns, err := ns.GetNS(n.NSPath)
	if err != nil {
		t.Fatalf("open namespace %s: %v", n.NSPath, err)
	}
	n.netns = netns
	n.Do(t, func() error { return n.setUp() })
	return n
}

func (n *Node) setUp() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("set lo up: %w", err)
	}

	// The kernel may lack the dummy driver; a veth pair with both ends in
	// the namespace serves as well.
	veth := &netlink.Veth{
		LinkAttrs: netlink.LinkAttrs{Name: UplinkName, MTU: UplinkMTU},
		PeerName:  PeerName,
	}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("add veth %s: %w", UplinkName, err)
	}
	peer, err := netlink.LinkByName(PeerName)
	if err != nil {
		return fmt.Errorf("find %s: %w", PeerName, err)
	}
	if err := netlink.LinkSetUp(peer); err != nil {
		return fmt.Errorf("set %s up: %w", PeerName, err)
	}

	link, err := netlink.LinkByName(UplinkName)
	if err != nil {
		return fmt.Errorf("find %s: %w", UplinkName, err)
	}
	n.UplinkIndex = link.Attrs().Index
	addr, err := netlink.ParseAddr(UplinkAddr)
	if err != nil {
		return err
	}
	if err := netlink.AddrAdd(link, addr); err != nil {
		return fmt.Errorf("add address %s: %w", UplinkAddr, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", UplinkName, err)
	}

	route := &netlink.Route{LinkIndex: n.UplinkIndex, Gw: net.ParseIP(Gateway)}
	if err := netlink.RouteAdd(route); err != nil {
		return fmt.Errorf("add default route via %s: %w", Gateway, err)
	}
	return nil
}

// Do runs f on a locked OS thread inside the node's namespace and fails the
// test when f returns an error.
func (n *Node) Do(t testing.TB, f func() error) {
	t.Helper()
	if err := n.netns.Do(func(ns.NetNS) error { return f() }); err != nil {
		t.Fatal(err)
	}
}

// DoErr runs f on a locked OS thread inside the node's namespace and
// returns its error.
func (n *Node) DoErr(f func() error) error {
	return n.netns.Do(func(ns.NetNS) error { return f() })
}

// ConfPath returns the path of the CNI configuration list that ferryd writes
// with the config of Config.
func (n *Node) ConfPath() string { return filepath.Join(n.ConfDir, "10-ferry.conflist") }

// Config returns a ferryd configuration for this node, worker-0 on eth0
// with 10.0.1.20, with the node entries given as YAML flow mappings and
// extra top-level lines appended. Nil nodes means DefaultNodes.
func (n *Node) Config(nodes []string, extra string) string {
	if nodes == nil {
		nodes = DefaultNodes
	}
	var b strings.Builder
	fmt.Fprintf(&b, "nodeName: worker-0\nclusterCIDR: 10.200.0.0/16\nbpffsDir: %s\n", n.BPFFSDir)
	fmt.Fprintf(&b, "cni:\n  confDir: %s\n  binDir: %s\n  ipamDataDir: %s\n",
		n.ConfDir, n.BinDir, n.IPAMDataDir)
	b.WriteString("nodes:\n")
	for _, node := range nodes {
		fmt.Fprintf(&b, "  - %s\n", node)
	}
	b.WriteString(extra)
	return b.String()
}

// DefaultNodes are this node, a node on its subnet and one on another subnet.
var DefaultNodes = []string{
	"{name: worker-0, ip: 10.0.1.20, podCIDR: 10.200.0.0/24}",
	"{name: worker-1, ip: 10.0.1.21, podCIDR: 10.200.1.0/24}",
	"{name: worker-2, ip: 10.0.2.20, podCIDR: 10.200.2.0/24}",
}

// WriteConfig writes a configuration file into the node's directory and
// returns its path.
func (n *Node) WriteConfig(t testing.TB, yaml string) string {
	t.Helper()
	path := filepath.Join(n.Dir, "ferryd.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func (n *Node) remove(t testing.TB) {
	if n.netns != nil {
		// Removing the pins detaches the tcx links; the uplink goes with the namespace.
		if err := n.DoErr(func() error { return datapath.Remove(n.BPFFSDir) }); err != nil {
			t.Errorf("remove bpffs directory %s: %v", n.BPFFSDir, err)
		}
		n.netns.Close()
	}
	if err := os.RemoveAll(n.BPFFSDir); err != nil {
		t.Errorf("remove %s: %v", n.BPFFSDir, err)
	}
	if out, err := exec.Command("ip", "netns", "del", n.NSName).CombinedOutput(); err != nil {
		t.Errorf("delete namespace %s: %v: %s", n.NSName, err, out)
	}
}

// removeLeftovers deletes the namespaces and bpffs directories of test
// processes that no longer run.
func removeLeftovers(t testing.TB) {
	for _, dir := range []string{netnsDir, "/sys/fs/bpf"} {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			pid, ok := creatorPID(e.Name())
			if !ok || processAlive(pid) {
				continue
			}
			path := filepath.Join(dir, e.Name())
			if dir == netnsDir {
				out, err := exec.Command("ip", "netns", "del", e.Name()).CombinedOutput()
				if err != nil {
					t.Logf("remove leftover namespace %s: %v: %s", e.Name(), err, out)
				}
				continue
			}
			if err := os.RemoveAll(path); err != nil {
				t.Logf("remove leftover %s: %v", path, err)
			}
		}
	}
}

func creatorPID(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, namePrefix)
	if !ok {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.SplitN(rest, "-", 2)[0])
	return pid, err == nil
}

func processAlive(pid int) bool {
	return syscall.Kill(pid, 0) == nil
}
