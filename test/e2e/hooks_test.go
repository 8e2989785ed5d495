package e2e

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ferrynet/ferry/pkg/agent/agenttest"
	"github.com/ferrynet/ferry/pkg/datapath"
	"github.com/ferrynet/ferry/test/lab"
)

// foreignPriority is the cls_bpf priority of the test's filters: below ferry's 0x4ff, so
// they run first.
const foreignPriority = 1

// foreignHandle is the cls_bpf handle of the test's filters, not ferry's.
const foreignHandle = 0x1

// counter is another software's program on a TC hook: it counts packets and hands each
// one on to the next program (TC_ACT_UNSPEC, which tcx calls TCX_NEXT).
type counter struct {
	name  string
	prog  *ebpf.Program
	count *ebpf.Map
	link  link.Link // tcx only
}

func newCounter(t *testing.T, name string) *counter {
	t.Helper()
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8,
		MaxEntries: 1})
	if err != nil {
		t.Fatalf("create counter map: %v", err)
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:    "foreign_count",
		Type:    ebpf.SchedCLS,
		License: "GPL",
		Instructions: asm.Instructions{
			asm.StoreImm(asm.RFP, -4, 0, asm.Word),
			asm.LoadMapPtr(asm.R1, m.FD()),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -4),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "next"),
			asm.Mov.Imm(asm.R1, 1),
			asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
			asm.Mov.Imm(asm.R0, -1).WithSymbol("next"),
			asm.Return(),
		},
	})
	if err != nil {
		m.Close()
		t.Fatalf("load counting program: %v", err)
	}
	c := &counter{name: name, prog: prog, count: m}
	t.Cleanup(func() {
		if c.link != nil {
			c.link.Close()
		}
		prog.Close()
		m.Close()
	})
	return c
}

func (c *counter) packets(t *testing.T) uint64 {
	t.Helper()
	var v uint64
	if err := c.count.Lookup(uint32(0), &v); err != nil {
		t.Fatalf("read counter %s: %v", c.name, err)
	}
	return v
}

// attach puts the counter on a hook of the interface name in ns: with tcx ahead of the
// programs there, or as a cls_bpf filter of a priority that runs before ferry's.
func (c *counter) attach(t *testing.T, ns *lab.Namespace, ifname string, ingress bool,
	mode string) {
	t.Helper()
	err := ns.Do(func() error {
		l, err := netlink.LinkByName(ifname)
		if err != nil {
			return err
		}
		ifindex := l.Attrs().Index
		if mode == "tcx" {
			attach := ebpf.AttachTCXEgress
			if ingress {
				attach = ebpf.AttachTCXIngress
			}
			c.link, err = link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: c.prog,
				Attach: attach, Anchor: link.Head()})
			return err
		}
		qdisc := &netlink.GenericQdisc{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: ifindex,
			Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
			QdiscType: "clsact"}
		if err := netlink.QdiscAdd(qdisc); err != nil && !errors.Is(err, unix.EEXIST) {
			return err
		}
		parent := uint32(netlink.HANDLE_MIN_EGRESS)
		if ingress {
			parent = netlink.HANDLE_MIN_INGRESS
		}
		return netlink.FilterAdd(&netlink.BpfFilter{
			FilterAttrs: netlink.FilterAttrs{LinkIndex: ifindex, Parent: parent,
				Handle: foreignHandle, Priority: foreignPriority, Protocol: unix.ETH_P_ALL},
			Fd: c.prog.FD(), Name: c.name, DirectAction: true,
		})
	})
	if err != nil {
		t.Fatalf("attach %s to %s in %s mode: %v", c.name, ifname, mode, err)
	}
}

// position returns the place of the counter's program in its hook's run order, from 0,
// or -1 when it is not attached.
func (c *counter) position(t *testing.T, ns *lab.Namespace, ifname string, ingress bool,
	mode string) int {
	t.Helper()
	info, err := c.prog.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := info.ID()
	pos := -1
	err = ns.Do(func() error {
		l, err := netlink.LinkByName(ifname)
		if err != nil {
			return err
		}
		if mode == "tcx" {
			attach := ebpf.AttachTCXEgress
			if ingress {
				attach = ebpf.AttachTCXIngress
			}
			res, err := link.QueryPrograms(link.QueryOptions{Target: l.Attrs().Index,
				Attach: attach})
			if err != nil {
				return err
			}
			for i, p := range res.Programs {
				if p.ID == id {
					pos = i
				}
			}
			return nil
		}
		parent := uint32(netlink.HANDLE_MIN_EGRESS)
		if ingress {
			parent = netlink.HANDLE_MIN_INGRESS
		}
		filters, err := netlink.FilterList(l, parent)
		if err != nil {
			return err
		}
		for i, f := range filters {
			if f.Attrs().Handle == foreignHandle && f.Attrs().Priority == foreignPriority {
				pos = i
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("list programs of %s: %v", ifname, err)
	}
	return pos
}

// hostVeth returns the name of the host side of a pod's veth on its node.
func hostVeth(t *testing.T, n *lab.Node, pod *lab.Pod) string {
	t.Helper()
	maps, err := datapath.OpenMaps(n.BPFFSDir())
	if err != nil {
		t.Fatal(err)
	}
	defer maps.Close()
	ep, found, err := maps.LookupEndpoint(pod.IP)
	if err != nil || !found {
		t.Fatalf("endpoint of %s: found %v, error %v", pod.IP, found, err)
	}
	var name string
	if err := n.Do(func() error {
		iface, err := net.InterfaceByIndex(ep.IfIndex)
		if err != nil {
			return err
		}
		name = iface.Name
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return name
}

// hookCounts returns how many programs the ingress and egress hooks of ifname on n hold,
// tcx programs and cls_bpf filters together.
func hookCounts(t *testing.T, n *lab.Node, ifname string) (int, int) {
	t.Helper()
	var h agenttest.HookPrograms
	err := n.Do(func() error {
		l, err := netlink.LinkByName(ifname)
		if err != nil {
			return err
		}
		h, err = agenttest.CountHookPrograms(l.Attrs().Index)
		return err
	})
	if err != nil {
		t.Fatalf("count programs of %s: %v", ifname, err)
	}
	return h.Ingress(), h.Egress()
}

// TestForeignProgramsKeepTheirTraffic attaches counting programs of another software to
// worker-0's uplink before ferryd starts, and to a pod's veth. Through ferryd's start,
// restart, stop and removal, in both attach modes, they must stay first on their hooks and
// keep counting the traffic that ferry forwards.
//
// The foreign programs attach in the mode of ferry's program on the same hook. The exception
// is the uplink in tcx with pods in their default clsact mode. There the foreign pod program
// is a tcx program, which runs before every cls_bpf filter.
func TestForeignProgramsKeepTheirTraffic(t *testing.T) {
	for _, modes := range []struct{ uplink, pods string }{
		{"tcx", "tcx"}, {"clsact", "clsact"}, {"tcx", "clsact"},
	} {
		t.Run(modes.uplink+"/"+modes.pods, func(t *testing.T) {
			testForeignPrograms(t, modes.uplink, modes.pods)
		})
	}
}

func testForeignPrograms(t *testing.T, mode, podMode string) {
	lab.SkipUnlessPrivileged(t)
	lab.SkipWithoutPlugins(t, []string{"/usr/lib/cni"}, "host-local", "loopback")
	l := lab.NewTest(t, lab.Options{Nodes: lab.CheckNodes()[:2],
		CNIBinDirs: []string{binDir, "/usr/lib/cni"}})
	w0, w1 := l.Node("worker-0"), l.Node("worker-1")
	ctx := context.Background()

	upIn, upOut := newCounter(t, "foreign_up_in"), newCounter(t, "foreign_up_out")
	upIn.attach(t, w0.Namespace, "eth0", true, mode)
	upOut.attach(t, w0.Namespace, "eth0", false, mode)

	opts := lab.FerryOptions{BinDir: binDir, AttachMode: mode, PodAttachMode: podMode}
	if err := l.SetupFerry(ctx, opts); err != nil {
		t.Fatalf("set up ferry: %v", err)
	}
	waitReady(t, w0, w0.Ferryd())
	a := addPod(t, w0, "pod-a")
	b := addPod(t, w1, "pod-b")
	veth := hostVeth(t, w0, a)
	podIn := newCounter(t, "foreign_pod_in")
	foreignPodMode := podMode
	if podMode == "clsact" && mode == "tcx" {
		foreignPodMode = "tcx"
	}
	podIn.attach(t, w0.Namespace, veth, true, foreignPodMode)

	counters := []*counter{upIn, upOut, podIn}
	hooks := []struct {
		c       *counter
		ifname  string
		ingress bool
		mode    string
	}{{upIn, "eth0", true, mode}, {upOut, "eth0", false, mode},
		{podIn, veth, true, foreignPodMode}}
	// check sends traffic that crosses every hook and checks that each counter saw it and
	// that the foreign programs run first.
	check := func(phase string, traffic func()) {
		t.Helper()
		before := make([]uint64, len(counters))
		for i, c := range counters {
			before[i] = c.packets(t)
		}
		traffic()
		for i, c := range counters {
			if got := c.packets(t); got <= before[i] {
				t.Errorf("%s: %s counted no packet (%d before, %d after)", phase, c.name,
					before[i], got)
			}
		}
		for _, h := range hooks {
			if pos := h.c.position(t, w0.Namespace, h.ifname, h.ingress, h.mode); pos != 0 {
				t.Errorf("%s: %s is at place %d of its hook, want first", phase, h.c.name, pos)
			}
		}
	}
	podTraffic := func() { ping(t, a, b.IP, 3) }

	check("after start", podTraffic)
	if in, out := hookCounts(t, w0, "eth0"); in != 2 || out != 2 {
		t.Errorf("uplink hooks hold %d and %d programs, want the foreign one and ferry's on "+
			"each", in, out)
	}

	p, err := w0.RestartFerryd(ctx, binDir)
	if err != nil {
		t.Fatalf("restart ferryd: %v", err)
	}
	waitReady(t, w0, p)
	check("after restart", podTraffic)
	if in, out := hookCounts(t, w0, "eth0"); in != 2 || out != 2 {
		t.Errorf("after restart, uplink hooks hold %d and %d programs, want 2 each", in, out)
	}
	if in, _ := hookCounts(t, w0, veth); in != 2 {
		t.Errorf("after restart, the pod veth's ingress holds %d programs, want 2", in)
	}

	if err := syscall.Kill(w0.Ferryd().PID, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-w0.Ferryd().Done()
	check("with ferryd stopped", podTraffic)

	out, err := w0.Run(ctx, filepath.Join(binDir, "ferryd"), "--remove", "--config",
		w0.FerrydConfigPath())
	if err != nil {
		t.Fatalf("ferryd --remove: %v\n%s", err, out)
	}
	if in, out := hookCounts(t, w0, "eth0"); in != 1 || out != 1 {
		t.Errorf("after ferryd --remove, uplink hooks hold %d and %d programs, want the "+
			"foreign one on each", in, out)
	}
	if in, _ := hookCounts(t, w0, veth); in != 1 {
		t.Errorf("after ferryd --remove, the pod veth's ingress holds %d programs, want 1", in)
	}
	// Without ferry the pod has no network, but its packets still pass the veth's hook,
	// and the node's own traffic passes the uplink's.
	check("after removal", func() {
		_, _ = a.Run(ctx, "ping", "-n", "-c", "2", "-i", "0.2", "-W", "1", b.IP.String())
		ping(t, w1, w0.IP, 2)
	})
}
