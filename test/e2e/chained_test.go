package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"

	"github.com/ferrynet/ferry/pkg/cni"
	"github.com/ferrynet/ferry/pkg/datapath"
	"github.com/ferrynet/ferry/test/lab"
)

// Port mapping of the chained test: the node's hostPort leads to containerPort in the pod.
const (
	hostPort      = 30080
	containerPort = 8080
)

// TestChainedPortmapBandwidth runs Debian's portmap and bandwidth plugins after ferry in one
// configuration list, with the capability arguments that kubelet passes through the runtime
// for a pod with a hostPort and bandwidth annotations. The hostPort must reach the pod from
// the vpc router and from another node, and DEL must remove what each plugin created.
//
// bandwidth's egress limit adds an ingress qdisc to the host veth, which cannot sit next to
// the clsact qdisc of ferry's default pod attachment, so the nodes attach pods with tcx.
func TestChainedPortmapBandwidth(t *testing.T) {
	l, _ := newFerryLab(t, lab.CheckNodes()[:2], lab.FerryOptions{PodAttachMode: "tcx"})
	lab.SkipWithoutPlugins(t, []string{"/usr/lib/cni"}, "portmap", "bandwidth")
	w0, w1 := l.Node("worker-0"), l.Node("worker-1")
	if mode := podAttachMode(t, w0); mode != datapath.AttachTCX {
		t.Skipf("pods are attached with %s: bandwidth's egress limit needs tcx (Linux 6.6 "+
			"or later)", mode)
	}
	list := chainedConflist(t, w0)

	podNS, err := testutils.NewNS()
	if err != nil {
		t.Fatalf("create pod namespace: %v", err)
	}
	t.Cleanup(func() {
		podNS.Close()
		testutils.UnmountNS(podNS)
	})
	rt := &libcni.RuntimeConf{
		ContainerID: strings.Repeat("c0ffee", 10) + "0123",
		NetNS:       podNS.Path(),
		IfName:      "eth0",
		Args:        [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "default"}},
		CapabilityArgs: map[string]any{
			"portMappings": []map[string]any{
				{"hostPort": hostPort, "containerPort": containerPort, "protocol": "tcp"},
			},
			"bandwidth": map[string]any{
				"ingressRate": 100_000_000, "ingressBurst": 1_000_000,
				"egressRate": 100_000_000, "egressBurst": 1_000_000,
			},
		},
	}
	cniConfig := libcni.NewCNIConfigWithCacheDir([]string{binDir, "/usr/lib/cni"},
		w0.CacheDir, nil)
	rulesBefore := iptablesNAT(t, w0)

	var raw types.Result
	err = w0.Do(func() error {
		var err error
		raw, err = cniConfig.AddNetworkList(context.Background(), list, rt)
		return err
	})
	if err != nil {
		t.Fatalf("ADD with portmap and bandwidth: %v", err)
	}
	result, err := current.NewResultFromResult(raw)
	if err != nil {
		t.Fatal(err)
	}
	podIP := netip.MustParseAddr(result.IPs[0].Address.IP.String())
	hostVeth := cni.HostVethName(rt.ContainerID, rt.IfName)
	deleted := false
	t.Cleanup(func() {
		if !deleted {
			w0.Do(func() error {
				return cniConfig.DelNetworkList(context.Background(), list, rt)
			})
		}
	})

	if !w0.PodCIDR.Contains(podIP) {
		t.Errorf("pod IP %s outside %s", podIP, w0.PodCIDR)
	}
	if rules := iptablesNAT(t, w0); !strings.Contains(rules,
		fmt.Sprintf("--dport %d", hostPort)) {
		t.Errorf("portmap added no DNAT rule for port %d:\n%s", hostPort, rules)
	}
	qdiscs := mustRun(t, w0, "tc", "qdisc", "show", "dev", hostVeth)
	if !strings.Contains(qdiscs, "tbf") {
		t.Errorf("bandwidth added no tbf qdisc to %s:\n%s", hostVeth, qdiscs)
	}
	ifbs := mustRun(t, w0, "ip", "-o", "link", "show", "type", "ifb")
	if strings.TrimSpace(ifbs) == "" {
		t.Errorf("bandwidth added no ifb device for the egress limit")
	}

	serveGreeting(t, podNS, netip.AddrPortFrom(podIP, containerPort))
	target := netip.AddrPortFrom(w0.IP, hostPort)
	for _, client := range []*lab.Namespace{l.VPC, w1.Namespace} {
		if got := dialGreeting(t, client, target); got != "hello from the pod" {
			t.Errorf("%s to hostPort %s returned %q, want the pod's greeting", client.NSName,
				target, got)
		}
	}

	err = w0.Do(func() error {
		return cniConfig.DelNetworkList(context.Background(), list, rt)
	})
	if err != nil {
		t.Fatalf("DEL with portmap and bandwidth: %v", err)
	}
	deleted = true
	// portmap keeps its chains that all pods share, such as CNI-HOSTPORT-DNAT, and deletes
	// the pod's own chain and rules.
	rulesAfter := iptablesNAT(t, w0)
	for _, pod := range []string{fmt.Sprintf("--dport %d", hostPort), "CNI-DN-", podIP.String()} {
		if strings.Contains(rulesAfter, pod) {
			t.Errorf("NAT rules still contain %q after DEL:\nbefore ADD:\n%s\nafter DEL:\n%s",
				pod, rulesBefore, rulesAfter)
		}
	}
	ifbs = mustRun(t, w0, "ip", "-o", "link", "show", "type", "ifb")
	if strings.TrimSpace(ifbs) != "" {
		t.Errorf("ifb devices left after DEL:\n%s", ifbs)
	}
	if links := mustRun(t, w0, "ip", "-o", "link", "show"); strings.Contains(links, hostVeth) {
		t.Errorf("host veth %s left after DEL", hostVeth)
	}
	routes := mustRun(t, w0, "ip", "-4", "route", "show", podIP.String()+"/32")
	if strings.TrimSpace(routes) != "" {
		t.Errorf("route to %s left after DEL: %s", podIP, routes)
	}
}

// chainedConflist returns ferryd's configuration list of n with portmap and bandwidth
// appended, as an operator who chains them writes it.
func chainedConflist(t *testing.T, n *lab.Node) *libcni.NetworkConfigList {
	t.Helper()
	data, err := n.FerryConflist()
	if err != nil {
		t.Fatal(err)
	}
	var list map[string]any
	if err := json.Unmarshal(data, &list); err != nil {
		t.Fatalf("decode ferryd's configuration list: %v", err)
	}
	// libcni 1.3 picks the highest version of cniVersions, 1.1.0, which Debian 12's
	// portmap and bandwidth (plugins 1.1.1) reject. Every plugin of a list must support its
	// version, so the chained list keeps cniVersion 1.0.0 alone.
	delete(list, "cniVersions")
	list["plugins"] = append(list["plugins"].([]any),
		map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
		map[string]any{"type": "bandwidth", "capabilities": map[string]bool{"bandwidth": true}},
	)
	chained, err := json.Marshal(list)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := libcni.ConfListFromBytes(chained)
	if err != nil {
		t.Fatalf("parse chained configuration list: %v\n%s", err, chained)
	}
	return parsed
}

// iptablesNAT returns the node's nat table without comment and counter lines.
func iptablesNAT(t *testing.T, n *lab.Node) string {
	t.Helper()
	var lines []string
	for _, line := range strings.Split(mustRun(t, n, "iptables-save", "-t", "nat"), "\n") {
		if !strings.HasPrefix(line, "#") && !strings.HasPrefix(line, ":") {
			lines = append(lines, line)
		}
	}
	return strings.Join(lines, "\n")
}

func mustRun(t *testing.T, n *lab.Node, args ...string) string {
	t.Helper()
	out, err := n.Run(context.Background(), args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// serveGreeting accepts TCP connections on addr in the pod namespace and replies to each
// with one line, until the test ends.
func serveGreeting(t *testing.T, podNS ns.NetNS, addr netip.AddrPort) {
	t.Helper()
	var listener net.Listener
	err := podNS.Do(func(ns.NetNS) error {
		var err error
		listener, err = net.Listen("tcp", addr.String())
		return err
	})
	if err != nil {
		t.Fatalf("listen on %s in the pod: %v", addr, err)
	}
	t.Cleanup(func() { listener.Close() })
	go func() {
		for {
			c, err := listener.Accept()
			if err != nil {
				return
			}
			fmt.Fprintln(c, "hello from the pod")
			c.Close()
		}
	}()
}

// dialGreeting connects from the namespace to addr and returns the line it reads.
func dialGreeting(t *testing.T, from *lab.Namespace, addr netip.AddrPort) string {
	t.Helper()
	var line string
	err := from.Do(func() error {
		c, err := net.DialTimeout("tcp", addr.String(), 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		line, err = bufio.NewReader(c).ReadString('\n')
		return err
	})
	if err != nil {
		t.Errorf("connect from %s to %s: %v", from.NSName, addr, err)
	}
	return strings.TrimSpace(line)
}
