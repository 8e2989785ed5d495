package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/ferrynet/ferry/test/lab"
)

// cniPods is how many pods each plugin networks on one node.
const cniPods = 100

// bridgeOnly returns the baseline configuration list of n without its loopback plugin, so
// that the bridge plugin with host-local is timed against ferry with host-local.
func bridgeOnly(n *lab.Node) ([]byte, error) {
	var list map[string]any
	if err := json.Unmarshal(n.BaselineConflist(), &list); err != nil {
		return nil, fmt.Errorf("parse baseline conflist: %w", err)
	}
	plugins, _ := list["plugins"].([]any)
	if len(plugins) == 0 {
		return nil, fmt.Errorf("parse baseline conflist: no plugins in it")
	}
	list["plugins"] = plugins[:1]
	return json.Marshal(list)
}

// runCNI adds cniPods pods to worker-2 of each lab, the bridge plugin's and ferry's in
// turn, then deletes them in the same alternation, and stores the duration of each CNI
// call. worker-2 runs no other pod of the bench.
func (b *bench) runCNI(ctx context.Context) error {
	type plugin struct {
		cfg      string
		node     *lab.Node
		conflist []byte
		pods     []*lab.Pod
	}
	bridgeNode := b.base.lab.Node("worker-2")
	bridgeConf, err := bridgeOnly(bridgeNode)
	if err != nil {
		return err
	}
	ferryNode := b.ferry.lab.Node("worker-2")
	ferryConf, err := ferryNode.FerryConflist()
	if err != nil {
		return err
	}
	plugins := []*plugin{
		{cfg: cfgBridge, node: bridgeNode, conflist: bridgeConf},
		{cfg: cfgFerry, node: ferryNode, conflist: ferryConf},
	}
	order := func(i int) []*plugin {
		if i%2 == 0 {
			return plugins
		}
		return []*plugin{plugins[1], plugins[0]}
	}

	for i := range cniPods {
		for _, p := range order(i) {
			name := fmt.Sprintf("cni-%03d", i)
			pod, took, err := p.node.AddPodTimed(ctx, name, p.conflist)
			if err != nil {
				return fmt.Errorf("add pod %d of %s: %w", i, p.cfg, err)
			}
			p.pods = append(p.pods, pod)
			b.res.add(kindCNIAdd, "", p.cfg, ms(took))
		}
	}
	for i := range cniPods {
		for _, p := range order(i) {
			took, err := p.node.DelPodTimed(ctx, p.pods[i])
			if err != nil {
				return fmt.Errorf("delete pod %d of %s: %w", i, p.cfg, err)
			}
			b.res.add(kindCNIDel, "", p.cfg, ms(took))
		}
	}
	return nil
}

// kindTCXAttach is the time of the step of ferry's CNI ADD that the bridge plugin does not
// have: attaching from_pod to the pod's new veth with a tcx link.
const kindTCXAttach = "tcx attach of from_pod to a new veth, ms"

// tcxAttaches is how many times runTCXAttach attaches the program.
const tcxAttaches = 20

// runTCXAttach times the tcx attachment of the pinned from_pod program to a new veth pair
// in worker-2 of the ferry lab, as ferry's CNI ADD does for every pod, and removes the
// pair again each time.
func (b *bench) runTCXAttach() error {
	n := b.ferry.lab.Node("worker-2")
	path := filepath.Join(n.BPFFSDir(), "progs", progFromPod)
	prog, err := ebpf.LoadPinnedProgram(path, nil)
	if err != nil {
		return fmt.Errorf("open pinned program %s: %w", path, err)
	}
	defer prog.Close()
	for range tcxAttaches {
		var took time.Duration
		err := n.Do(func() error {
			h, err := netlink.NewHandle()
			if err != nil {
				return fmt.Errorf("open netlink socket: %w", err)
			}
			defer h.Close()
			veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "fbench0"},
				PeerName: "fbench1"}
			if err := h.LinkAdd(veth); err != nil {
				return fmt.Errorf("create veth fbench0: %w", err)
			}
			defer h.LinkDel(veth)
			created, err := h.LinkByName("fbench0")
			if err != nil {
				return fmt.Errorf("find veth fbench0: %w", err)
			}
			start := time.Now()
			l, err := link.AttachTCX(link.TCXOptions{
				Interface: created.Attrs().Index,
				Program:   prog,
				Attach:    ebpf.AttachTCXIngress,
			})
			took = time.Since(start)
			if err != nil {
				return fmt.Errorf("attach %s to fbench0: %w", progFromPod, err)
			}
			return l.Close()
		})
		if err != nil {
			return fmt.Errorf("time tcx attach on %s: %w", n.Name, err)
		}
		b.res.add(kindTCXAttach, "", cfgFerry, ms(took))
	}
	return nil
}

// kindPluginStart is the time of a CNI VERSION call: the plugin's process start and exit,
// with no network work.
const kindPluginStart = "plugin process start and exit (CNI VERSION), ms"

// pluginStarts is how many VERSION calls runPluginStart makes per plugin.
const pluginStarts = 20

// runPluginStart times CNI VERSION calls of the bridge plugin and of ferry's, in turns.
// VERSION only prints the supported versions, so the call touches no namespace.
func (b *bench) runPluginStart(ctx context.Context) error {
	plugins := []struct{ cfg, path string }{
		{cfgBridge, "/usr/lib/cni/bridge"},
		{cfgFerry, filepath.Join(b.binDir, "ferry")},
	}
	for range pluginStarts {
		for _, p := range plugins {
			cmd := exec.CommandContext(ctx, p.path)
			cmd.Env = append(os.Environ(), "CNI_COMMAND=VERSION")
			cmd.Stdin = strings.NewReader(`{"cniVersion":"1.0.0"}`)
			start := time.Now()
			out, err := cmd.CombinedOutput()
			took := time.Since(start)
			if err != nil {
				return fmt.Errorf("run %s with CNI_COMMAND=VERSION: %w: %s", p.path, err, out)
			}
			b.res.add(kindPluginStart, "", p.cfg, ms(took))
		}
	}
	return nil
}
