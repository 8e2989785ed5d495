package cni_test

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ferrynet/ferry/pkg/cni"
	"github.com/ferrynet/ferry/pkg/datapath"
)

func TestAddConfiguresPod(t *testing.T) {
	n := newTestNode(t)
	pod := newTestPod(t)
	raw := n.mustAdd(t, n.defaultList(t), pod)
	result, err := current.NewResultFromResult(raw)
	if err != nil {
		t.Fatalf("convert result: %v", err)
	}
	name := pod.hostName()

	// The result.
	if len(result.Interfaces) != 2 {
		t.Fatalf("result has %d interfaces, want 2 (host veth, pod interface): %+v",
			len(result.Interfaces), result.Interfaces)
	}
	hostIface, podIface := result.Interfaces[0], result.Interfaces[1]
	if hostIface.Name != name || hostIface.Sandbox != "" {
		t.Errorf("interface 0 is %+v, want host veth %s without sandbox", hostIface, name)
	}
	if podIface.Name != "eth0" || podIface.Sandbox != pod.ns.Path() {
		t.Errorf("interface 1 is %+v, want eth0 in sandbox %s", podIface, pod.ns.Path())
	}
	if len(result.IPs) != 1 {
		t.Fatalf("result has %d IPs, want 1: %+v", len(result.IPs), result.IPs)
	}
	ipc := result.IPs[0]
	if got := ipc.Address.String(); got != firstPod.String()+"/24" {
		t.Errorf("address %s, want %s/24", got, firstPod)
	}
	if !ipc.Gateway.Equal(gatewayIP.AsSlice()) {
		t.Errorf("gateway %s, want %s", ipc.Gateway, gatewayIP)
	}
	if ipc.Interface == nil || *ipc.Interface != 1 {
		t.Errorf("IP interface index %v, want 1 (the pod interface)", ipc.Interface)
	}
	if len(result.Routes) != 1 || result.Routes[0].Dst.String() != "0.0.0.0/0" {
		t.Errorf("routes %v, want one to 0.0.0.0/0", result.Routes)
	}

	// The pod side.
	addrs := runIn(t, pod.ns.Path(), "ip", "-4", "-o", "addr", "show", "dev", "eth0")
	if !strings.Contains(addrs, "inet "+firstPod.String()+"/24") {
		t.Errorf("pod eth0 lacks %s/24:\n%s", firstPod, addrs)
	}
	routes := runIn(t, pod.ns.Path(), "ip", "-4", "route", "show")
	if !strings.Contains(routes, "default via "+gatewayIP.String()+" dev eth0") {
		t.Errorf("pod has no default route via %s:\n%s", gatewayIP, routes)
	}
	link := runIn(t, pod.ns.Path(), "ip", "-o", "link", "show", "dev", "eth0")
	if !strings.Contains(link, fmt.Sprintf("mtu %d ", uplinkMTU)) {
		t.Errorf("pod eth0 MTU is not the uplink's %d:\n%s", uplinkMTU, link)
	}
	if !strings.Contains(link, "link/ether "+podIface.Mac) {
		t.Errorf("pod eth0 MAC is not the result's %s:\n%s", podIface.Mac, link)
	}
	ipv6 := runIn(t, pod.ns.Path(), "cat", "/proc/sys/net/ipv6/conf/eth0/disable_ipv6")
	if strings.TrimSpace(ipv6) != "1" {
		t.Errorf("pod eth0 disable_ipv6 = %q, want 1", ipv6)
	}

	// The host side.
	host := n.hostLink(t, name)
	if host == nil {
		t.Fatalf("host veth %s missing", name)
	}
	if host.Type() != "veth" {
		t.Errorf("host interface %s is a %s, want veth", name, host.Type())
	}
	if host.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("host veth %s is down", name)
	}
	if host.Attrs().MTU != uplinkMTU {
		t.Errorf("host veth MTU %d, want %d", host.Attrs().MTU, uplinkMTU)
	}
	if got := host.Attrs().HardwareAddr.String(); got != hostIface.Mac {
		t.Errorf("host veth MAC %s, result lists %s", got, hostIface.Mac)
	}
	hostRoute := n.run(t, "ip", "-4", "route", "show", firstPod.String()+"/32")
	if !strings.Contains(hostRoute, "dev "+name+" scope link") {
		t.Errorf("node has no route %s/32 dev %s scope link:\n%s", firstPod, name, hostRoute)
	}
	wantAlias := "ferry:" + networkName + ":" + pod.rt.ContainerID + ":eth0"
	if got := host.Attrs().Alias; got != wantAlias {
		t.Errorf("host veth alias %q, want %q", got, wantAlias)
	}
	rpFilter := n.run(t, "cat", filepath.Join("/proc/sys/net/ipv4/conf", name, "rp_filter"))
	if strings.TrimSpace(rpFilter) != "0" {
		t.Errorf("host veth rp_filter = %q, want 0", rpFilter)
	}
	hostAddrs := n.run(t, "ip", "-o", "addr", "show", "dev", name)
	if strings.TrimSpace(hostAddrs) != "" {
		t.Errorf("host veth has addresses, want none:\n%s", hostAddrs)
	}

	// The dataplane.
	maps := n.maps(t)
	ep, found, err := maps.LookupEndpoint(firstPod)
	if err != nil || !found {
		t.Fatalf("endpoint %s: found %v, error %v", firstPod, found, err)
	}
	if ep.IfIndex != host.Attrs().Index {
		t.Errorf("endpoint ifindex %d, host veth has %d", ep.IfIndex, host.Attrs().Index)
	}
	if ep.PodMAC.String() != podIface.Mac {
		t.Errorf("endpoint pod MAC %s, want %s", ep.PodMAC, podIface.Mac)
	}
	if ep.HostMAC.String() != hostIface.Mac {
		t.Errorf("endpoint host MAC %s, want %s", ep.HostMAC, hostIface.Mac)
	}
	settings, err := maps.Settings()
	if err != nil {
		t.Fatalf("read settings: %v", err)
	}
	mode := settings.PodAttachMode()
	n.inNode(t, func() error {
		attached, err := datapath.PodAttached(n.bpffsDir, name, host.Attrs().Index, mode)
		if err != nil {
			return err
		}
		if !attached {
			t.Errorf("pod program not attached to %s (%s)", name, mode)
		}
		return nil
	})

	if owner := n.allocated(t)[firstPod.String()]; owner != pod.rt.ContainerID {
		t.Errorf("host-local reserved %s for %q, want container %s", firstPod, owner,
			pod.rt.ContainerID)
	}
}

func TestAddConfiguredMTU(t *testing.T) {
	n := newTestNode(t)
	pod := newTestPod(t)
	list := confList(t, "1.0.0", n.netConf(podCIDR.String(), map[string]any{"mtu": 1280}))
	n.mustAdd(t, list, pod)

	link := runIn(t, pod.ns.Path(), "ip", "-o", "link", "show", "dev", "eth0")
	if !strings.Contains(link, "mtu 1280 ") {
		t.Errorf("pod eth0 MTU is not the configured 1280:\n%s", link)
	}
	if host := n.hostLink(t, pod.hostName()); host == nil || host.Attrs().MTU != 1280 {
		t.Errorf("host veth %v, want MTU 1280", host)
	}
}

// counterValue returns the packet count of one reason.
func counterValue(t *testing.T, maps *datapath.Maps, reason datapath.Reason) uint64 {
	t.Helper()
	counters, err := maps.Counters()
	if err != nil {
		t.Fatalf("read counters: %v", err)
	}
	for _, c := range counters {
		if c.Reason == reason {
			return c.Packets
		}
	}
	t.Fatalf("no counter %s", reason)
	return 0
}

var ttlPattern = regexp.MustCompile(`ttl=(\d+)`)

func TestAddPodsReachEachOther(t *testing.T) {
	n := newTestNode(t)
	list := n.defaultList(t)
	podA, podB := newTestPod(t), newTestPod(t)
	n.mustAdd(t, list, podA)
	n.mustAdd(t, list, podB)
	maps := n.maps(t)

	// The node's IPv4 forwarding is off, so only the pod program can carry this traffic.
	if fwd := n.run(t, "cat", "/proc/sys/net/ipv4/ip_forward"); strings.TrimSpace(fwd) != "0" {
		t.Fatalf("node ip_forward = %q, want 0", fwd)
	}

	t.Run("pod to pod", func(t *testing.T) {
		before := counterValue(t, maps, datapath.ReasonFwdLocal)
		out := runIn(t, podA.ns.Path(), "ping", "-c", "3", "-i", "0.2", "-W", "2",
			secondPod.String())
		if !strings.Contains(out, " 0% packet loss") {
			t.Errorf("ping %s lost packets:\n%s", secondPod, out)
		}
		// The request and the reply each cross one hop that decrements the TTL of 64.
		for _, m := range ttlPattern.FindAllStringSubmatch(out, -1) {
			if m[1] != "63" {
				t.Errorf("reply ttl=%s, want 63 (one BPF forwarding hop):\n%s", m[1], out)
				break
			}
		}
		if got := counterValue(t, maps, datapath.ReasonFwdLocal) - before; got < 6 {
			t.Errorf("forward-local counter rose by %d, want at least 6 (3 requests, "+
				"3 replies)", got)
		}
	})

	t.Run("pod back", func(t *testing.T) {
		out := runIn(t, podB.ns.Path(), "ping", "-c", "2", "-i", "0.2", "-W", "2",
			firstPod.String())
		if !strings.Contains(out, " 0% packet loss") {
			t.Errorf("ping %s lost packets:\n%s", firstPod, out)
		}
	})

	t.Run("pod to gateway", func(t *testing.T) {
		// The program sends the ARP reply for the gateway. The echo reply needs the gateway
		// address on the node, so the test adds it to lo.
		n.run(t, "ip", "addr", "add", gatewayIP.String()+"/32", "dev", "lo")
		before := counterValue(t, maps, datapath.ReasonARPReply)
		out := runIn(t, podA.ns.Path(), "ping", "-c", "2", "-i", "0.2", "-W", "2",
			gatewayIP.String())
		if !strings.Contains(out, " 0% packet loss") {
			t.Errorf("ping %s lost packets:\n%s", gatewayIP, out)
		}
		if counterValue(t, maps, datapath.ReasonARPReply) == before {
			t.Errorf("arp-reply counter did not rise")
		}
		hostMAC := n.hostLink(t, podA.hostName()).Attrs().HardwareAddr.String()
		neigh := runIn(t, podA.ns.Path(), "ip", "neigh", "show", gatewayIP.String(),
			"dev", "eth0")
		if !strings.Contains(neigh, "lladdr "+hostMAC) {
			t.Errorf("gateway %s does not resolve to host veth MAC %s:\n%s", gatewayIP,
				hostMAC, neigh)
		}
	})

	t.Run("pod to node IP", func(t *testing.T) {
		out := runIn(t, podA.ns.Path(), "ping", "-c", "2", "-i", "0.2", "-W", "2",
			nodeIP.String())
		if !strings.Contains(out, " 0% packet loss") {
			t.Errorf("ping %s lost packets:\n%s", nodeIP, out)
		}
	})

	t.Run("node to pod", func(t *testing.T) {
		out := n.run(t, "ping", "-c", "2", "-i", "0.2", "-W", "2", firstPod.String())
		if !strings.Contains(out, " 0% packet loss") {
			t.Errorf("ping %s from the node lost packets:\n%s", firstPod, out)
		}
	})
}

func TestAddClsactMode(t *testing.T) {
	n := newTestNodeMode(t, datapath.AttachClsact)
	list := n.defaultList(t)
	podA, podB := newTestPod(t), newTestPod(t)
	n.mustAdd(t, list, podA)
	n.mustAdd(t, list, podB)

	for _, pod := range []*testPod{podA, podB} {
		name := pod.hostName()
		host := n.hostLink(t, name)
		if host == nil {
			t.Fatalf("host veth %s missing", name)
		}
		n.inNode(t, func() error {
			attached, err := datapath.PodAttached(n.bpffsDir, name, host.Attrs().Index,
				datapath.AttachClsact)
			if err != nil {
				return err
			}
			if !attached {
				t.Errorf("no cls_bpf filter of the pod program on %s", name)
			}
			return nil
		})
		if _, err := os.Stat(n.linkPinPath(name)); err == nil {
			t.Errorf("tcx link pinned for %s in clsact mode", name)
		}
		if err := n.check(list, pod); err != nil {
			t.Errorf("CHECK: %v", err)
		}
	}

	out := runIn(t, podA.ns.Path(), "ping", "-c", "2", "-i", "0.2", "-W", "2",
		secondPod.String())
	if !strings.Contains(out, " 0% packet loss") || !strings.Contains(out, "ttl=63") {
		t.Errorf("ping %s through the cls_bpf program failed:\n%s", secondPod, out)
	}

	if err := n.del(list, podA); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	n.assertNothingLeft(t, podA, firstPod)
}

// iptablesRules returns the node's iptables rules without comment lines, which carry times.
func iptablesRules(t *testing.T, n *testNode) string {
	t.Helper()
	var lines []string
	for _, line := range strings.Split(n.run(t, "iptables-save"), "\n") {
		if !strings.HasPrefix(line, "#") {
			lines = append(lines, line)
		}
	}
	return strings.Join(lines, "\n")
}

// TestAddTCXPods covers podAttachMode tcx: each pod's program is a pinned tcx link, which
// DEL removes with the veth.
func TestAddTCXPods(t *testing.T) {
	n := newTCXPodNode(t)
	list := n.defaultList(t)
	pod := newTestPod(t)
	n.mustAdd(t, list, pod)
	name := pod.hostName()
	host := n.hostLink(t, name)
	if host == nil {
		t.Fatalf("host veth %s missing", name)
	}

	n.inNode(t, func() error {
		attached, err := datapath.PodAttached(n.bpffsDir, name, host.Attrs().Index,
			datapath.AttachTCX)
		if err != nil {
			return err
		}
		if !attached {
			t.Errorf("no tcx link of the pod program on %s", name)
		}
		clsact, err := datapath.PodAttached(n.bpffsDir, name, host.Attrs().Index,
			datapath.AttachClsact)
		if err != nil {
			return err
		}
		if clsact {
			t.Errorf("cls_bpf filter of the pod program on %s in tcx pod mode", name)
		}
		return nil
	})
	if err := n.check(list, pod); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	out := runIn(t, pod.ns.Path(), "ping", "-c", "2", "-i", "0.2", "-W", "2",
		nodeIP.String())
	if !strings.Contains(out, " 0% packet loss") {
		t.Errorf("ping %s from the pod lost packets:\n%s", nodeIP, out)
	}

	if err := n.del(list, pod); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if _, err := os.Stat(n.linkPinPath(name)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("tcx link pin of %s after DEL: %v", name, err)
	}
}

func TestAddCreatesNoBridgeOrIptablesRule(t *testing.T) {
	n := newTestNode(t)
	before := iptablesRules(t, n)
	list := n.defaultList(t)
	n.mustAdd(t, list, newTestPod(t))
	n.mustAdd(t, list, newTestPod(t))

	if after := iptablesRules(t, n); after != before {
		t.Errorf("iptables rules changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	n.inNode(t, func() error {
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		for _, l := range links {
			if l.Type() == "bridge" {
				t.Errorf("node has bridge %s", l.Attrs().Name)
			}
		}
		return nil
	})
}

func TestAddWithoutDataplane(t *testing.T) {
	n := newTestNode(t)
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string)
	}{
		{"nothing pinned", func(*testing.T, string) {}},
		{"settings not written", func(t *testing.T, dir string) {
			t.Cleanup(func() {
				n.inNode(t, func() error { return datapath.Remove(dir) })
				os.RemoveAll(dir)
			})
			n.loadDataplane(t, dir, false)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := "/sys/fs/bpf/ferry-cnitest-" + randomHex(t, 6)
			tt.setup(t, dir)
			list := confList(t, "1.0.0", n.netConf(podCIDR.String(),
				map[string]any{"bpffsDir": dir}))
			pod := newTestPod(t)

			_, err := n.add(list, pod)
			if err == nil {
				t.Fatal("ADD succeeded without a loaded dataplane")
			}
			if code := cniCode(err); code != 11 {
				t.Errorf("error code %d, want 11 (try again later): %v", code, err)
			}
			want := "ferry dataplane is not loaded under " + dir + ": start ferryd on this node"
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not contain %q", err, want)
			}
			n.assertNothingLeft(t, pod, firstPod)
		})
	}
}

func TestAddRollback(t *testing.T) {
	tests := []struct {
		name     string
		subnet   string
		inject   func(t *testing.T, n *testNode, pod *testPod)
		wantCode int // -1: any code
		wantMsg  string
		// podIP is the address that the failed ADD would have had, firstPod when unset.
		podIP netip.Addr
		// verify checks what the injected fault must leave in place.
		verify func(t *testing.T, n *testNode, pod *testPod)
		// podTCX attaches pod programs with tcx links instead of cls_bpf filters.
		podTCX bool
	}{
		{
			name:   "IPAM exhausted",
			subnet: "10.200.0.0/30", // one address: .1 is the gateway, .3 the broadcast
			inject: func(t *testing.T, n *testNode, _ *testPod) {
				list := confList(t, "1.0.0", n.netConf("10.200.0.0/30", nil))
				n.mustAdd(t, list, newTestPod(t))
			},
			wantCode: -1,
			podIP:    secondPod, // firstPod belongs to the pod that took the one address
		},
		{
			name: "missing netns",
			inject: func(t *testing.T, _ *testNode, pod *testPod) {
				pod.rt.NetNS = "/run/netns/ferry-cnitest-missing-" + randomHex(t, 6)
			},
			wantCode: 4,
		},
		{
			name: "host interface name taken",
			inject: func(t *testing.T, n *testNode, pod *testPod) {
				n.run(t, "ip", "link", "add", pod.hostName(), "type", "ifb")
			},
			wantCode: int(cni.ErrCodeInterfaceExists),
			verify: func(t *testing.T, n *testNode, pod *testPod) {
				if l := n.hostLink(t, pod.hostName()); l == nil || l.Type() != "ifb" {
					t.Errorf("the ifb %s that held the name is gone: %v", pod.hostName(), l)
				}
			},
		},
		{
			name: "pod interface name taken",
			inject: func(t *testing.T, _ *testNode, pod *testPod) {
				runIn(t, pod.ns.Path(), "ip", "link", "add", "eth0", "type", "ifb")
			},
			wantCode: int(cni.ErrCodeInterfaceExists),
			verify: func(t *testing.T, _ *testNode, pod *testPod) {
				out := runIn(t, pod.ns.Path(), "ip", "-d", "link", "show", "eth0")
				if !strings.Contains(out, "ifb") {
					t.Errorf("the pod's ifb eth0 is gone:\n%s", out)
				}
			},
		},
		{
			name:     "endpoints map full",
			inject:   func(t *testing.T, n *testNode, _ *testPod) { fillEndpoints(t, n) },
			wantCode: int(cni.ErrCodeDatapath),
			wantMsg:  "the endpoints map is full",
		},
		{
			name:   "attach fails",
			podTCX: true,
			inject: func(t *testing.T, n *testNode, pod *testPod) {
				// A directory where the link pin goes makes pinning the tcx link fail.
				path := n.linkPinPath(pod.hostName())
				if err := os.Mkdir(path, 0o700); err != nil {
					t.Fatalf("create %s: %v", path, err)
				}
				t.Cleanup(func() { os.Remove(path) })
			},
			wantCode: int(cni.ErrCodeDatapath),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newTestNode(t)
			if tt.podTCX {
				n = newTCXPodNode(t)
			}
			subnet := tt.subnet
			if subnet == "" {
				subnet = podCIDR.String()
			}
			list := confList(t, "1.0.0", n.netConf(subnet, nil))
			pod := newTestPod(t)
			tt.inject(t, n, pod)
			endpointsBefore, err := n.maps(t).Endpoints()
			if err != nil {
				t.Fatalf("list endpoints: %v", err)
			}

			_, err = n.add(list, pod)
			if err == nil {
				t.Fatal("ADD succeeded despite the injected fault")
			}
			t.Logf("ADD error: %v", err)
			if code := cniCode(err); tt.wantCode >= 0 && code != tt.wantCode {
				t.Errorf("error code %d, want %d: %v", code, tt.wantCode, err)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not contain %q", err, tt.wantMsg)
			}
			if strings.Contains(err.Error(), "undoing the partial ADD also failed") {
				t.Errorf("rollback failed: %v", err)
			}

			podIP := tt.podIP
			if !podIP.IsValid() {
				podIP = firstPod
			}
			n.assertNothingLeft(t, pod, podIP)
			endpointsAfter, err := n.maps(t).Endpoints()
			if err != nil {
				t.Fatalf("list endpoints: %v", err)
			}
			if len(endpointsAfter) != len(endpointsBefore) {
				t.Errorf("endpoints %v after the failed ADD, want %v", endpointsAfter,
					endpointsBefore)
			}
			if tt.verify != nil {
				tt.verify(t, n, pod)
			}

			// A runtime deletes a pod whose ADD failed; that must succeed and leave the
			// injected fault alone.
			if err := n.del(list, pod); err != nil {
				t.Errorf("DEL after the failed ADD: %v", err)
			}
			if tt.verify != nil {
				tt.verify(t, n, pod)
			}
		})
	}
}

func TestAddRepeated(t *testing.T) {
	n := newTestNode(t)
	list := n.defaultList(t)
	pod := newTestPod(t)
	n.mustAdd(t, list, pod)
	host := n.hostLink(t, pod.hostName())
	if host == nil {
		t.Fatalf("host veth %s missing after ADD", pod.hostName())
	}

	_, err := n.add(list, pod)
	if err == nil {
		t.Fatal("second ADD of the same container and interface succeeded")
	}
	if code := cniCode(err); code != int(cni.ErrCodeInterfaceExists) {
		t.Errorf("error code %d, want %d: %v", code, cni.ErrCodeInterfaceExists, err)
	}

	reserved := n.allocated(t)
	if len(reserved) != 1 || reserved[firstPod.String()] != pod.rt.ContainerID {
		t.Errorf("reservations %v, want only %s for container %s", reserved, firstPod,
			pod.rt.ContainerID)
	}
	if again := n.hostLink(t, pod.hostName()); again == nil ||
		again.Attrs().Index != host.Attrs().Index {
		t.Errorf("host veth changed or vanished: %v", again)
	}
	if err := n.check(list, pod); err != nil {
		t.Errorf("CHECK of the first ADD after the failed second: %v", err)
	}
}

// fillEndpoints fills the endpoints map with entries of 172.16.0.0/12 until the kernel
// rejects the next one, as on a node with as many pods as the map holds.
func fillEndpoints(t *testing.T, n *testNode) {
	t.Helper()
	maps := n.maps(t)
	ip := netip.MustParseAddr("172.16.0.1")
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	for count := 0; ; count++ {
		if count > 1<<20 {
			t.Fatalf("the endpoints map took %d entries without filling up", count)
		}
		err := maps.PutEndpoint(datapath.Endpoint{IP: ip, IfIndex: 1, PodMAC: mac, HostMAC: mac})
		if errors.Is(err, unix.E2BIG) {
			t.Logf("endpoints map full after %d entries", count)
			return
		}
		if err != nil {
			t.Fatalf("fill endpoints map: %v", err)
		}
		ip = ip.Next()
	}
}
