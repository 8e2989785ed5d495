package agent

import (
	"net"
	"net/netip"
	"path/filepath"
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

func TestRestartMovesPodsToNewProgram(t *testing.T) {
	node := agenttest.NewNode(t)
	a, _ := startAgent(t, node, parseConfig(t, node.Config(nil, "attachMode: tcx\n")))
	a.Close()
	pod := addPod(t, node, datapath.AttachTCX)
	oldID := pinnedProgramID(t, node)

	a, _ = startAgent(t, node, parseConfig(t, node.Config(nil, "attachMode: tcx\n")))
	a.Close()
	newID := pinnedProgramID(t, node)
	if newID == oldID {
		t.Fatalf("restart pinned the same pod program %d", newID)
	}
	var attached []ebpf.ProgramID
	node.Do(t, func() error {
		res, err := link.QueryPrograms(link.QueryOptions{Target: pod,
			Attach: ebpf.AttachTCXIngress})
		if err != nil {
			return err
		}
		for _, p := range res.Programs {
			attached = append(attached, p.ID)
		}
		return nil
	})
	if len(attached) != 1 || attached[0] != newID {
		t.Errorf("pod programs = %v, want only the new program %d", attached, newID)
	}
}

func TestRestartMovesPodsToNewMode(t *testing.T) {
	node := agenttest.NewNode(t)
	a, _ := startAgent(t, node, parseConfig(t, node.Config(nil, "attachMode: tcx\n")))
	a.Close()
	pod := addPod(t, node, datapath.AttachTCX)
	if h := podHooks(t, node, pod); h != (agenttest.HookPrograms{TCXIngress: 1}) {
		t.Fatalf("pod programs after attach = %+v, want one tcx ingress program", h)
	}

	steps := []struct {
		mode string
		want agenttest.HookPrograms
	}{
		{"clsact", agenttest.HookPrograms{ClsactIngress: 1}},
		{"tcx", agenttest.HookPrograms{TCXIngress: 1}},
	}
	for _, step := range steps {
		a, logs := startAgent(t, node, parseConfig(t, node.Config(nil,
			"attachMode: "+step.mode+"\n")))
		a.Close()
		if h := podHooks(t, node, pod); h != step.want {
			t.Errorf("pod programs after a start in %s mode = %+v, want %+v\n%s",
				step.mode, h, step.want, logs)
		}
	}
}
