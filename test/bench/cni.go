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

	"github.com/vishvananda/netlink"

	"github.com/ferrynet/ferry/pkg/datapath"
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

// Kinds of the pod attachment timing: the step of ferry's CNI ADD that the bridge plugin
// does not have, attaching from_pod to the pod's new veth, in the two modes that
// podAttachMode selects.
const (
	kindAttachClsact = "attach from_pod to a new veth as a cls_bpf filter (default), ms"
	kindAttachTCX    = "attach from_pod to a new veth with a tcx link, ms"
)

// podAttaches is how many times runPodAttach attaches the program in each mode.
const podAttaches = 20

// runPodAttach times datapath.AttachPod, the call of ferry's CNI ADD, on a new veth pair in
// worker-2 of the ferry lab, in each pod attach mode in turns, and removes the pair and the
// link pin again each time.
func (b *bench) runPodAttach() error {
	n := b.ferry.lab.Node("worker-2")
	modes := []struct {
		kind string
		mode datapath.AttachMode
	}{{kindAttachClsact, datapath.AttachClsact}, {kindAttachTCX, datapath.AttachTCX}}
	for range podAttaches {
		for _, m := range modes {
			var took time.Duration
			err := n.Do(func() error {
				veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "fbench0"},
					PeerName: "fbench1"}
				if err := netlink.LinkAdd(veth); err != nil {
					return fmt.Errorf("create veth fbench0: %w", err)
				}
				defer netlink.LinkDel(veth)
				created, err := netlink.LinkByName("fbench0")
				if err != nil {
					return fmt.Errorf("find veth fbench0: %w", err)
				}
				start := time.Now()
				err = datapath.AttachPod(n.BPFFSDir(), "fbench0", created.Attrs().Index, m.mode)
				took = time.Since(start)
				if err != nil {
					return fmt.Errorf("attach %s to fbench0 in %s mode: %w", progFromPod,
						m.mode, err)
				}
				return datapath.DetachPod(n.BPFFSDir(), "fbench0")
			})
			if err != nil {
				return fmt.Errorf("time pod attachment on %s: %w", n.Name, err)
			}
			b.res.add(m.kind, "", cfgFerry, ms(took))
		}
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
