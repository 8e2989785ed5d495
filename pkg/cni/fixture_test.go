package cni_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"

	"github.com/ferrynet/ferry/pkg/cni"
	"github.com/ferrynet/ferry/pkg/datapath"
)

// The fixture's node: eth0 holds the node IP, and the node's pods get addresses of podCIDR.
var (
	nodeIP    = netip.MustParseAddr("10.0.1.20")
	nodeNet   = netip.MustParsePrefix("10.0.1.20/24")
	podCIDR   = netip.MustParsePrefix("10.200.0.0/24")
	gatewayIP = netip.MustParseAddr("10.200.0.1")
	firstPod  = netip.MustParseAddr("10.200.0.2")
	secondPod = netip.MustParseAddr("10.200.0.3")
)

// uplinkMTU is the MTU of the node's eth0. It differs from 1500 so that tests see the
// plugin take the default MTU from the node IP's interface.
const uplinkMTU = 1400

// networkName is the CNI network name, which host-local uses as its directory name.
const networkName = "ferry"

// pluginDir contains the ferry plugin binary that TestMain builds when running as root.
var pluginDir string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	if os.Geteuid() != 0 {
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "ferry-cni-bin-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "create plugin directory: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "ferry"),
		"github.com/ferrynet/ferry/cmd/ferry")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build the ferry plugin: %v\n%s", err, out)
		return 1
	}
	pluginDir = dir
	return m.Run()
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces, loads BPF programs and pins them")
	}
}

// testNode is a node network namespace with a loaded and configured ferry dataplane.
type testNode struct {
	mode     datapath.AttachMode
	podMode  datapath.AttachMode // clsact, or tcx where mode allows
	ns       ns.NetNS
	bpffsDir string
	dataDir  string // host-local's reservations
	cacheDir string // libcni's cached results
	uplink   int
}

// newTestNode creates a node namespace with eth0 (a veth holding nodeNet) and
// loads the dataplane under a new bpffs directory, as ferryd does on a node. Everything is
// removed when the test ends.
func newTestNode(t *testing.T) *testNode {
	t.Helper()
	return newTestNodeModes(t, datapath.AttachAuto, datapath.AttachClsact)
}

// newTestNodeMode is newTestNode with the uplink programs attached in mode, and pod
// programs as cls_bpf filters.
func newTestNodeMode(t *testing.T, mode datapath.AttachMode) *testNode {
	t.Helper()
	return newTestNodeModes(t, mode, datapath.AttachClsact)
}

// newTCXPodNode is newTestNode with the uplink and pod programs attached with tcx. It skips
// the test on kernels without tcx.
func newTCXPodNode(t *testing.T) *testNode {
	t.Helper()
	n := newTestNodeModes(t, datapath.AttachAuto, datapath.AttachTCX)
	if s, err := n.maps(t).Settings(); err != nil || s.PodClsact {
		t.Skipf("needs tcx (Linux 6.6 or later) for pod programs; settings %+v, %v", s, err)
	}
	return n
}

// newTestNodeModes is newTestNode with the uplink programs attached in mode and pod
// programs in podMode, which falls back to clsact where the uplink is.
func newTestNodeModes(t *testing.T, mode, podMode datapath.AttachMode) *testNode {
	t.Helper()
	requireRoot(t)
	nodeNS := newNetNS(t)
	n := &testNode{
		mode:     mode,
		podMode:  podMode,
		ns:       nodeNS,
		bpffsDir: "/sys/fs/bpf/ferry-cnitest-" + randomHex(t, 6),
		dataDir:  t.TempDir(),
		cacheDir: t.TempDir(),
	}

	err := nodeNS.Do(func(ns.NetNS) error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return fmt.Errorf("find lo: %w", err)
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return fmt.Errorf("set lo up: %w", err)
		}
		// This kernel has no dummy driver, so eth0 is a veth whose peer stays in the node.
		attrs := netlink.NewLinkAttrs()
		attrs.Name = "eth0"
		attrs.MTU = uplinkMTU
		eth0 := &netlink.Veth{LinkAttrs: attrs, PeerName: "eth0-peer"}
		if err := netlink.LinkAdd(eth0); err != nil {
			return fmt.Errorf("add eth0: %w", err)
		}
		addr := &netlink.Addr{IPNet: prefixToIPNet(nodeNet)}
		if err := netlink.AddrAdd(eth0, addr); err != nil {
			return fmt.Errorf("add %s to eth0: %w", nodeNet, err)
		}
		for _, name := range []string{"eth0-peer", "eth0"} {
			if err := netlink.LinkSetUp(&netlink.Device{LinkAttrs: netlink.LinkAttrs{
				Name: name}}); err != nil {
				return fmt.Errorf("set %s up: %w", name, err)
			}
		}
		created, err := netlink.LinkByName("eth0")
		if err != nil {
			return fmt.Errorf("find eth0: %w", err)
		}
		n.uplink = created.Attrs().Index
		return nil
	})
	if err != nil {
		t.Fatalf("set up node namespace: %v", err)
	}

	t.Cleanup(func() {
		err := nodeNS.Do(func(ns.NetNS) error { return datapath.Remove(n.bpffsDir) })
		if err != nil {
			t.Errorf("remove dataplane under %s: %v", n.bpffsDir, err)
		}
		if err := os.RemoveAll(n.bpffsDir); err != nil {
			t.Errorf("remove %s: %v", n.bpffsDir, err)
		}
	})
	n.loadDataplane(t, n.bpffsDir, true)
	return n
}

// loadDataplane loads the dataplane under dir. With configure it also attaches the uplink
// programs and writes the node settings; without it the dataplane is half set up, as while
// ferryd starts.
func (n *testNode) loadDataplane(t *testing.T, dir string, configure bool) {
	t.Helper()
	err := n.ns.Do(func(ns.NetNS) error {
		dp, err := datapath.Load(dir, datapath.LoadOptions{NATEntries: 1024})
		if err != nil {
			return err
		}
		defer dp.Close()
		if !configure {
			return nil
		}
		mode, err := dp.AttachUplink(n.uplink, n.mode)
		if err != nil {
			return err
		}
		return dp.SetSettings(datapath.NodeSettings{
			NodeIP:        nodeIP,
			PodCIDR:       podCIDR,
			UplinkIfIndex: n.uplink,
			Masquerade:    true,
			NATPortMin:    32768,
			NATPortMax:    65535,
			UplinkClsact:  mode == datapath.AttachClsact,
			PodClsact:     mode == datapath.AttachClsact || n.podMode == datapath.AttachClsact,
		})
	})
	if err != nil {
		t.Fatalf("load dataplane under %s: %v", dir, err)
	}
}

// newNetNS creates a network namespace that is removed when the test ends.
func newNetNS(t *testing.T) ns.NetNS {
	t.Helper()
	netNS, err := testutils.NewNS()
	if err != nil {
		t.Fatalf("create network namespace: %v", err)
	}
	t.Cleanup(func() { removeNetNS(t, netNS) })
	return netNS
}

// removeNetNS deletes a namespace that newNetNS created; removing it twice is harmless.
func removeNetNS(t *testing.T, netNS ns.NetNS) {
	t.Helper()
	_ = netNS.Close()
	if _, err := os.Stat(netNS.Path()); errors.Is(err, os.ErrNotExist) {
		return
	}
	if err := testutils.UnmountNS(netNS); err != nil {
		t.Errorf("remove network namespace %s: %v", netNS.Path(), err)
	}
}

// netConf returns the plugin's entry of the configuration list, as ferryd writes it, with
// extra fields set or replaced. A nil extra value deletes the field.
func (n *testNode) netConf(subnet string, extra map[string]any) map[string]any {
	conf := map[string]any{
		"type":     "ferry",
		"bpffsDir": n.bpffsDir,
		"ipam": map[string]any{
			"type":    "host-local",
			"ranges":  []any{[]any{map[string]any{"subnet": subnet}}},
			"routes":  []any{map[string]any{"dst": "0.0.0.0/0"}},
			"dataDir": n.dataDir,
		},
	}
	for k, v := range extra {
		if v == nil {
			delete(conf, k)
			continue
		}
		conf[k] = v
	}
	return conf
}

// confList returns a configuration list of version cniVersion with the plugin entry conf.
func confList(t *testing.T, cniVersion string, conf map[string]any) *libcni.NetworkConfigList {
	t.Helper()
	raw, err := json.Marshal(map[string]any{
		"cniVersion": cniVersion,
		"name":       networkName,
		"plugins":    []any{conf},
	})
	if err != nil {
		t.Fatalf("encode configuration list: %v", err)
	}
	list, err := libcni.ConfListFromBytes(raw)
	if err != nil {
		t.Fatalf("parse configuration list %s: %v", raw, err)
	}
	return list
}

// defaultList is the configuration list of most tests: version 1.0.0, the node's pod CIDR.
func (n *testNode) defaultList(t *testing.T) *libcni.NetworkConfigList {
	return confList(t, "1.0.0", n.netConf(podCIDR.String(), nil))
}

// testPod is a pod namespace and the runtime parameters of its CNI calls.
type testPod struct {
	ns ns.NetNS
	rt *libcni.RuntimeConf
}

func newTestPod(t *testing.T) *testPod {
	t.Helper()
	podNS := newNetNS(t)
	return &testPod{
		ns: podNS,
		rt: &libcni.RuntimeConf{
			ContainerID: randomHex(t, 32),
			NetNS:       podNS.Path(),
			IfName:      "eth0",
		},
	}
}

func (p *testPod) hostName() string { return cni.HostVethName(p.rt.ContainerID, p.rt.IfName) }

// cni returns a libcni client that finds the ferry plugin and Debian's plugins.
func (n *testNode) cni() *libcni.CNIConfig {
	return libcni.NewCNIConfigWithCacheDir([]string{pluginDir, "/usr/lib/cni"}, n.cacheDir, nil)
}

// add runs CNI ADD from a thread in the node namespace, as a runtime on the node does: the
// plugin process inherits the namespace of the thread that starts it.
func (n *testNode) add(list *libcni.NetworkConfigList, pod *testPod) (types.Result, error) {
	var result types.Result
	err := n.ns.Do(func(ns.NetNS) error {
		var err error
		result, err = n.cni().AddNetworkList(context.Background(), list, pod.rt)
		return err
	})
	return result, err
}

// mustAdd runs CNI ADD and fails the test on error.
func (n *testNode) mustAdd(t *testing.T, list *libcni.NetworkConfigList,
	pod *testPod) types.Result {
	t.Helper()
	result, err := n.add(list, pod)
	if err != nil {
		t.Fatalf("CNI ADD of container %s: %v", pod.rt.ContainerID, err)
	}
	return result
}

func (n *testNode) del(list *libcni.NetworkConfigList, pod *testPod) error {
	return n.ns.Do(func(ns.NetNS) error {
		return n.cni().DelNetworkList(context.Background(), list, pod.rt)
	})
}

func (n *testNode) check(list *libcni.NetworkConfigList, pod *testPod) error {
	return n.ns.Do(func(ns.NetNS) error {
		return n.cni().CheckNetworkList(context.Background(), list, pod.rt)
	})
}

// inNode runs fn with the calling thread in the node namespace.
func (n *testNode) inNode(t *testing.T, fn func() error) {
	t.Helper()
	if err := n.ns.Do(func(ns.NetNS) error { return fn() }); err != nil {
		t.Fatal(err)
	}
}

// maps opens the dataplane's maps; they are closed when the test ends.
func (n *testNode) maps(t *testing.T) *datapath.Maps {
	t.Helper()
	m, err := datapath.OpenMaps(n.bpffsDir)
	if err != nil {
		t.Fatalf("open maps: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// hostLink returns the interface name in the node namespace, or nil when there is none.
func (n *testNode) hostLink(t *testing.T, name string) netlink.Link {
	t.Helper()
	var link netlink.Link
	n.inNode(t, func() error {
		l, err := netlink.LinkByName(name)
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("find interface %s: %w", name, err)
		}
		link = l
		return nil
	})
	return link
}

// allocated returns host-local's reservations: address to the container ID that holds it.
func (n *testNode) allocated(t *testing.T) map[string]string {
	t.Helper()
	dir := filepath.Join(n.dataDir, networkName)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatalf("read host-local reservations: %v", err)
	}
	out := map[string]string{}
	for _, e := range entries {
		if _, err := netip.ParseAddr(e.Name()); err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatalf("read reservation %s: %v", e.Name(), err)
		}
		out[e.Name()] = strings.TrimSpace(strings.SplitN(string(data), "\n", 2)[0])
	}
	return out
}

// linkPinPath is where AttachPod pins a pod's tcx link.
func (n *testNode) linkPinPath(hostName string) string {
	return filepath.Join(n.bpffsDir, "links", "pod_"+hostName)
}

// assertNothingLeft checks that no trace of the pod's network remains: no host veth, no
// pod interface, no endpoint entry and host route for ip, no link pin, no reservation.
func (n *testNode) assertNothingLeft(t *testing.T, pod *testPod, ip netip.Addr) {
	t.Helper()
	name := pod.hostName()
	if link := n.hostLink(t, name); link != nil && link.Type() == "veth" {
		t.Errorf("host veth %s still exists", name)
	}
	// A directory at the pin path is a test's injected fault, not a link pin.
	if fi, err := os.Stat(n.linkPinPath(name)); err == nil && !fi.IsDir() {
		t.Errorf("link pin %s still exists", n.linkPinPath(name))
	}
	if _, found, err := n.maps(t).LookupEndpoint(ip); err != nil || found {
		t.Errorf("endpoint %s: found %v, error %v; want no entry", ip, found, err)
	}
	if out := n.run(t, "ip", "-4", "route", "show", "match", ip.String()+"/32"); strings.Contains(
		out, ip.String()+" dev") {
		t.Errorf("host route to %s still exists:\n%s", ip, out)
	}
	for addr, owner := range n.allocated(t) {
		if owner == pod.rt.ContainerID {
			t.Errorf("address %s still reserved for container %s", addr, owner)
		}
	}
	if _, err := os.Stat(pod.ns.Path()); err == nil {
		out := runIn(t, pod.ns.Path(), "ip", "-o", "link", "show")
		if strings.Contains(out, pod.rt.IfName+"@") {
			t.Errorf("pod interface %s still exists:\n%s", pod.rt.IfName, out)
		}
	}
}

// run runs a command in the node namespace and returns its output; it fails the test on error.
func (n *testNode) run(t *testing.T, args ...string) string {
	t.Helper()
	return runIn(t, n.ns.Path(), args...)
}

// runIn runs a command in the network namespace at nsPath with nsenter, which keeps the mount
// namespace and so the bpffs under /sys/fs/bpf, unlike `ip netns exec`.
func runIn(t *testing.T, nsPath string, args ...string) string {
	t.Helper()
	out, err := tryIn(nsPath, args...)
	if err != nil {
		t.Fatalf("%s in %s: %v\n%s", strings.Join(args, " "), nsPath, err, out)
	}
	return out
}

func tryIn(nsPath string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + nsPath}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("read random bytes: %v", err)
	}
	return hex.EncodeToString(b)
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// cniCode returns the CNI error code of err, or -1 when err carries none.
func cniCode(err error) int {
	var cniErr *types.Error
	if errors.As(err, &cniErr) {
		return int(cniErr.Code)
	}
	return -1
}
