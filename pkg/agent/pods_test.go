package agent

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/ferrynet/ferry/pkg/agent/agenttest"
	"github.com/ferrynet/ferry/pkg/datapath"
)

// addPod creates a veth pair in node's namespace and registers its host
// side as an endpoint with the pod program attached, as the CNI plugin does.
func addPod(t *testing.T, node *agenttest.Node, mode datapath.AttachMode) int {
	t.Helper()
	var ifindex int
	node.Do(t, func() error {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "hpod0"}, PeerName: "ppod0"}
		if err := netlink.LinkAdd(veth); err != nil {
			return err
		}
		host, err := netlink.LinkByName("hpod0")
		if err != nil {
			return err
		}
		ifindex = host.Attrs().Index
		return datapath.AttachPod(node.BPFFSDir, "hpod0", ifindex, mode)
	})
	m := openMaps(t, node.BPFFSDir)
	ep := datapath.Endpoint{
		IP:      netip.MustParseAddr("10.200.0.5"),
		IfIndex: ifindex,
		PodMAC:  net.HardwareAddr{2, 0, 0, 0, 0, 5},
		HostMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1},
	}
	if err := m.PutEndpoint(ep); err != nil {
		t.Fatal(err)
	}
	return ifindex
}

func podHooks(t *testing.T, node *agenttest.Node, ifindex int) agenttest.HookPrograms {
	t.Helper()
	var h agenttest.HookPrograms
	node.Do(t, func() error {
		var err error
		h, err = agenttest.CountHookPrograms(ifindex)
		return err
	})
	return h
}

// pinnedProgramID returns the ID of the pod program that the last start pinned.
func pinnedProgramID(t *testing.T, node *agenttest.Node) ebpf.ProgramID {
	t.Helper()
	prog, err := ebpf.LoadPinnedProgram(filepath.Join(node.BPFFSDir, "progs", "from_pod"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	info, err := prog.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := info.ID()
	return id
}

// ingressProgramIDs returns the IDs of the programs on the ingress hook of
// ifindex: tcx programs first, then those of cls_bpf filters.
func ingressProgramIDs(t *testing.T, node *agenttest.Node, ifindex int) []ebpf.ProgramID {
	t.Helper()
	var ids []ebpf.ProgramID
	node.Do(t, func() error {
		res, err := link.QueryPrograms(link.QueryOptions{Target: ifindex,
			Attach: ebpf.AttachTCXIngress})
		if err != nil {
			return err
		}
		for _, p := range res.Programs {
			ids = append(ids, p.ID)
		}
		l, err := netlink.LinkByIndex(ifindex)
		if err != nil {
			return err
		}
		filters, err := netlink.FilterList(l, netlink.HANDLE_MIN_INGRESS)
		if err != nil {
			return nil // no clsact qdisc
		}
		for _, f := range filters {
			if bpf, ok := f.(*netlink.BpfFilter); ok {
				ids = append(ids, ebpf.ProgramID(bpf.Id))
			}
		}
		return nil
	})
	return ids
}

func TestRestartMovesPodsToNewProgram(t *testing.T) {
	for _, mode := range []datapath.AttachMode{datapath.AttachClsact, datapath.AttachTCX} {
		t.Run(string(mode), func(t *testing.T) {
			node := agenttest.NewNode(t)
			cfg := "attachMode: tcx\npodAttachMode: " + string(mode) + "\n"
			a, _ := startAgent(t, node, parseConfig(t, node.Config(nil, cfg)))
			a.Close()
			pod := addPod(t, node, mode)
			oldID := pinnedProgramID(t, node)

			a, _ = startAgent(t, node, parseConfig(t, node.Config(nil, cfg)))
			a.Close()
			newID := pinnedProgramID(t, node)
			if newID == oldID {
				t.Fatalf("restart pinned the same pod program %d", newID)
			}
			attached := ingressProgramIDs(t, node, pod)
			if len(attached) != 1 || attached[0] != newID {
				t.Errorf("pod programs = %v, want only the new program %d", attached, newID)
			}
		})
	}
}

func TestRestartMovesPodsToNewMode(t *testing.T) {
	node := agenttest.NewNode(t)
	a, _ := startAgent(t, node, parseConfig(t, node.Config(nil,
		"attachMode: tcx\npodAttachMode: tcx\n")))
	a.Close()
	pod := addPod(t, node, datapath.AttachTCX)
	if h := podHooks(t, node, pod); h != (agenttest.HookPrograms{TCXIngress: 1}) {
		t.Fatalf("pod programs after attach = %+v, want one tcx ingress program", h)
	}

	steps := []struct {
		config string
		want   agenttest.HookPrograms
	}{
		{"attachMode: clsact\n", agenttest.HookPrograms{ClsactIngress: 1}},
		{"attachMode: tcx\npodAttachMode: tcx\n", agenttest.HookPrograms{TCXIngress: 1}},
		// The default pod mode.
		{"attachMode: tcx\n", agenttest.HookPrograms{ClsactIngress: 1}},
	}
	for _, step := range steps {
		a, logs := startAgent(t, node, parseConfig(t, node.Config(nil, step.config)))
		a.Close()
		if h := podHooks(t, node, pod); h != step.want {
			t.Errorf("pod programs after a start with %q = %+v, want %+v\n%s",
				step.config, h, step.want, logs)
		}
	}
	if _, err := os.Stat(filepath.Join(node.BPFFSDir, "links", "pod_hpod0")); !os.IsNotExist(err) {
		t.Errorf("tcx link pin of the pod after the move to clsact: %v", err)
	}
}

// TestRestartKeepsTCXBesideIngressQdisc covers a pod veth with an ingress qdisc of another
// kind than clsact, as the bandwidth plugin adds for an egress limit, with a filter that
// redirects every packet. A cls_bpf filter of ferry's on that qdisc would run after it, so a
// start in clsact pod mode keeps the pod's tcx link and logs a warning.
func TestRestartKeepsTCXBesideIngressQdisc(t *testing.T) {
	node := agenttest.NewNode(t)
	a, _ := startAgent(t, node, parseConfig(t, node.Config(nil,
		"attachMode: tcx\npodAttachMode: tcx\n")))
	a.Close()
	pod := addPod(t, node, datapath.AttachTCX)
	node.Do(t, func() error {
		return netlink.QdiscAdd(&netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{
			LinkIndex: pod, Handle: netlink.MakeHandle(0xffff, 0),
			Parent: netlink.HANDLE_INGRESS}})
	})

	a, logs := startAgent(t, node, parseConfig(t, node.Config(nil, "attachMode: tcx\n")))
	a.Close()
	if h := podHooks(t, node, pod); h != (agenttest.HookPrograms{TCXIngress: 1}) {
		t.Errorf("pod programs = %+v, want the tcx link alone", h)
	}
	if !strings.Contains(logs.String(), "pod veth attached with tcx") {
		t.Errorf("no warning about the pod kept on tcx in the log:\n%s", logs)
	}
	m := openMaps(t, node.BPFFSDir)
	var pods datapath.PodHooks
	node.Do(t, func() error {
		var err error
		_, pods, err = m.Hooks(node.BPFFSDir)
		return err
	})
	if pods.Attached != 1 || pods.AttachedTCX != 1 {
		t.Errorf("Hooks counts %d pods attached, %d with tcx, want 1 and 1: %+v",
			pods.Attached, pods.AttachedTCX, pods)
	}
}
