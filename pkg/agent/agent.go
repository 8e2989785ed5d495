// Package agent is the logic of ferryd, the node agent. It loads and attaches
// the dataplane and keeps its maps and the node's kernel routes in line with
// the configuration. It writes the CNI configuration once the node can
// network pods, and it expires idle NAT flows.
//
// Every function works in the calling thread's network namespace, which must
// be the node's: ferryd runs inside it, and tests lock the OS thread in a
// namespace of their own.
package agent

import (
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"slices"
	"sync/atomic"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/ferrynet/ferry/pkg/config"
	"github.com/ferrynet/ferry/pkg/datapath"
	"github.com/ferrynet/ferry/pkg/metrics"
	"github.com/ferrynet/ferry/pkg/nodesource"
)

// Agent is the running agent of one node.
type Agent struct {
	log *slog.Logger
	// base is the configuration as loaded. With the Kubernetes node source
	// it has no node list.
	base *config.Config
	// cfg is the configuration in effect: base with the node list that the
	// node source provides.
	cfg  *config.Config
	node nodeInfo
	// mode and podMode are the attach modes in use on the uplink and on pod
	// veths: tcx or clsact, never auto.
	mode    datapath.AttachMode
	podMode datapath.AttachMode
	dp      *datapath.Datapath
	source  nodesource.Source
	// metrics is nil when the agent runs without a metrics listener.
	metrics *metrics.Metrics
	// netns is the node's network namespace, which the metrics handlers
	// enter to read the hooks' state.
	netns ns.NetNS
	ready atomic.Bool
	// skipped records why nodes of the source are not routed, to log each
	// reason once.
	skipped map[string]string
	// selfConflict is the last new address or pod range of this node that
	// the source reported and the agent could not apply, logged once.
	selfConflict nodesource.Node
}

// Start sets up the node from a validated config. In this order, it loads and
// pins the dataplane, fills its maps and attaches the uplink programs. Then it
// moves existing pods to the loaded pod program, installs kernel routes to the
// remote pod ranges and writes the CNI configuration.
//
// Start changes nothing on the node when the config does not fit the node
// (the device is missing, or the node IP differs): it then returns a
// *config.Error. After a later failure the pins stay, and the dataplane of
// an earlier start, if any, keeps forwarding.
func Start(cfg *config.Config, log *slog.Logger) (*Agent, error) {
	return start(cfg, cfg, nodesource.NewStatic(sourceNodes(cfg.Nodes)), log, nil)
}

// start sets up the node like Start with cfg, the config in effect, which
// has the nodes of src. base is the config as loaded.
func start(base, cfg *config.Config, src nodesource.Source, log *slog.Logger,
	m *metrics.Metrics) (*Agent, error) {
	node, err := resolveNode(cfg)
	if err != nil {
		return nil, err
	}
	routed := pinnedRoutes(cfg.BPFFSDir)
	log.Info("starting", "node", cfg.NodeName, "device", node.Device, "ifindex", node.IfIndex,
		"node_ip", node.IP, "cidr", cfg.Self().PodCIDR, "bpffs_dir", cfg.BPFFSDir,
		"attach_mode", cfg.AttachMode)
	warnAboutSetup(cfg, node, log)

	netns, err := ns.GetCurrentNS()
	if err != nil {
		return nil, fmt.Errorf("open the node's network namespace: %w", err)
	}
	dp, err := datapath.Load(cfg.BPFFSDir, datapath.LoadOptions{NATEntries: cfg.NATEntries()})
	if err != nil {
		netns.Close()
		return nil, fmt.Errorf("load dataplane: %w", err)
	}
	logLoad(log, dp)
	a := &Agent{log: log, base: base, cfg: cfg, node: node, dp: dp, source: src, metrics: m,
		netns: netns, skipped: map[string]string{}}
	_, skipped := selectNodes(base, src.Nodes(), routed)
	a.logSkipped(skipped)
	if err := a.start(); err != nil {
		a.Close()
		return nil, err
	}
	return a, nil
}

// logLoad logs the maps that Load converted and the stale pins it removed.
func logLoad(log *slog.Logger, dp *datapath.Datapath) {
	for _, m := range dp.Migrations {
		if m.Emptied {
			log.Warn("pinned map replaced by an empty one: its entries could not be converted "+
				"and ferryd fills it again", "map", m.Map, "change", m.Change, "reason", m.Why)
			continue
		}
		log.Info("pinned map converted to the new layout", "map", m.Map, "change", m.Change,
			"entries", m.Copied)
	}
	for _, path := range dp.RemovedPins {
		log.Info("removed stale pin", "path", path)
	}
}

func (a *Agent) start() error {
	prev, err := a.dp.Settings()
	// In auto mode a kernel without tcx keeps clsact: start with the mode of
	// the previous start, which AttachUplink then confirms or corrects.
	guess := datapath.AttachTCX
	if a.cfg.AttachMode == datapath.AttachClsact ||
		a.cfg.AttachMode == datapath.AttachAuto && err == nil && prev.UplinkClsact {
		guess = datapath.AttachClsact
	}

	// The maps are complete before the programs are attached, so that a first
	// attachment never forwards with a partial state.
	if err := a.syncMaps(a.cfg); err != nil {
		return err
	}
	if err := a.writeSettings(a.cfg, guess, a.podModeFor(guess)); err != nil {
		return err
	}

	mode, err := a.dp.AttachUplink(a.node.IfIndex, a.cfg.AttachMode)
	if err != nil {
		return fmt.Errorf("attach uplink programs to %s: %w", a.node.Device, err)
	}
	a.mode, a.podMode = mode, a.podModeFor(mode)
	a.log.Info("attached uplink programs", "device", a.node.Device, "ifindex", a.node.IfIndex,
		"attach_mode", mode)
	if mode != guess {
		if err := a.writeSettings(a.cfg, a.mode, a.podMode); err != nil {
			return err
		}
	}
	if a.podMode != a.cfg.PodAttachMode {
		a.log.Warn("pod programs attached with cls_bpf: the kernel has no tcx",
			"pod_attach_mode", a.podMode)
	}

	// A pod that the update misses keeps its old program and still forwards,
	// so the node goes on to become ready.
	onTCX, err := a.dp.UpdatePods(a.podMode)
	for _, name := range onTCX {
		a.log.Warn("pod veth attached with tcx: its ingress qdisc is not clsact, as with "+
			"the bandwidth plugin's egress limit, and would run its filters before ferry's; "+
			"the pod stays on tcx until it is created again without such a qdisc",
			"interface", name, "pod_attach_mode", a.podMode)
	}
	if err != nil {
		a.log.Error("update pod programs failed", "pod_attach_mode", a.podMode, "error", err)
	}
	a.removeStale()

	if err := a.syncRoutes(a.cfg); err != nil {
		return err
	}
	if err := a.installPlugin(a.cfg.CNI.BinDir); err != nil {
		return err
	}
	if err := a.writeCNIConfig(a.cfg); err != nil {
		return err
	}
	a.ready.Store(true)
	a.updateNodeMetrics()
	a.log.Info("ready", "node", a.cfg.NodeName, "remote_nodes", len(a.cfg.RemoteNodes()),
		"attach_mode", a.mode, "pod_attach_mode", a.podMode, "node_source", a.source.Name())
	return nil
}

// podModeFor returns the pod attach mode with the uplink in mode: the
// configured one, or clsact when the uplink has no tcx.
func (a *Agent) podModeFor(uplink datapath.AttachMode) datapath.AttachMode {
	if uplink == datapath.AttachClsact {
		return datapath.AttachClsact
	}
	return a.cfg.PodAttachMode
}

// removeStale detaches the links that no longer serve, such as those of
// deleted pods, and completes the conversion of maps that Load replaced,
// now that no program of the previous start writes to the old maps.
func (a *Agent) removeStale() {
	removed, err := datapath.RemoveStaleLinks(a.dp.Dir, a.node.IfIndex)
	for _, path := range removed {
		a.log.Info("removed stale link", "path", path)
	}
	if err != nil {
		a.log.Error("remove stale links failed", "bpffs_dir", a.dp.Dir, "error", err)
	}
	if len(a.dp.Migrations) == 0 {
		return
	}
	added, err := a.dp.FinishMigrations()
	if err != nil {
		a.log.Error("finish map conversion failed", "error", err)
		return
	}
	a.log.Info("map conversion finished", "late_entries", added)
}

// syncRoutes installs a kernel route to each remote pod range whose node is
// on the device's subnet and removes ferry's other routes.
func (a *Agent) syncRoutes(cfg *config.Config) error {
	subnets, err := deviceAddrs(a.node.IfIndex)
	if err != nil {
		return err
	}
	want := desiredRoutes(cfg.RemoteNodes(), subnets)
	conflicts, err := syncKernelRoutes(a.node.IfIndex, want)
	for _, c := range conflicts {
		a.log.Warn("kernel route left to another protocol", "cidr", c.Dst,
			"protocol", c.Protocol.String())
	}
	if err != nil {
		return fmt.Errorf("sync kernel routes: %w", err)
	}
	return nil
}

// writeCNIConfig writes the CNI configuration with the device's current MTU.
func (a *Agent) writeCNIConfig(cfg *config.Config) error {
	mtu, err := deviceMTU(a.node.IfIndex)
	if err != nil {
		return err
	}
	written, err := writeConflist(cfg, mtu)
	if err != nil {
		return err
	}
	if written {
		a.log.Info("wrote CNI configuration",
			"path", filepath.Join(cfg.CNI.ConfDir, cfg.CNI.ConfName),
			"cidr", cfg.Self().PodCIDR, "mtu", mtu)
	}
	return nil
}

// AttachMode returns the attach mode in use on the uplink, tcx or clsact.
func (a *Agent) AttachMode() datapath.AttachMode { return a.mode }

// PodAttachMode returns the attach mode in use on pod veths, tcx or clsact.
func (a *Agent) PodAttachMode() datapath.AttachMode { return a.podMode }

// Close releases the dataplane's file descriptors. The pinned dataplane stays
// attached and keeps forwarding.
func (a *Agent) Close() error {
	a.ready.Store(false)
	a.netns.Close()
	return a.dp.Close()
}

// warnAboutSetup logs what is likely wrong but does not stop the agent.
func warnAboutSetup(cfg *config.Config, node nodeInfo, log *slog.Logger) {
	if cfg.NodeIP.IsValid() {
		addrs, err := deviceAddrs(node.IfIndex)
		if err == nil && !slices.ContainsFunc(addrs, func(p netip.Prefix) bool {
			return p.Addr() == cfg.NodeIP
		}) {
			log.Warn("node IP is not an address of the device: replies to masqueraded "+
				"traffic will not reach this node", "node_ip", cfg.NodeIP, "device", node.Device)
		}
	}
}
