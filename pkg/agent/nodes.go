package agent

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/ferrynet/ferry/pkg/config"
	"github.com/ferrynet/ferry/pkg/datapath"
	"github.com/ferrynet/ferry/pkg/nodesource"
)

// waitLogInterval is how often Run repeats that it still waits for this
// node's entry in the node source.
const waitLogInterval = 30 * time.Second

// maxNodeChangeLines bounds the per-node lines that one node change logs at
// info level. Beyond it, as when many nodes join at once, the lines go to
// debug level and a summary stays at info.
const maxNodeChangeLines = 20

// NewNodeSource returns the node source that cfg selects: the Kubernetes
// API with a kubernetes section, the static node list otherwise.
func NewNodeSource(cfg *config.Config) (nodesource.Source, error) {
	if cfg.Kubernetes == nil {
		return nodesource.NewStatic(sourceNodes(cfg.Nodes)), nil
	}
	client, err := nodesource.NewClient(cfg.Kubernetes.Kubeconfig)
	if err != nil {
		return nil, err
	}
	return nodesource.NewKubernetes(client), nil
}

func sourceNodes(nodes []config.Node) []nodesource.Node {
	out := make([]nodesource.Node, len(nodes))
	for i, n := range nodes {
		out[i] = nodesource.Node{Name: n.Name, IP: n.IP, PodCIDR: n.PodCIDR}
	}
	return out
}

// selectNodes returns the nodes of the source that ferry can route to and
// the reason for skipping each of the others. A node is skipped without an
// IPv4 address or pod range, or when its range or address breaks a rule that
// the config file's validation enforces for a static list. Of two nodes that
// conflict, the first in this order is kept: this node, then the nodes for
// which routed reports that their route is in effect as it is, then the
// others, each group in the source's order. So neither a new node nor a
// changed one takes the route of a routed node.
func selectNodes(cfg *config.Config, nodes []nodesource.Node,
	routed func(nodesource.Node) bool) ([]config.Node, map[string]string) {
	var out []config.Node
	skipped := map[string]string{}
	ips := map[netip.Addr]string{}
	rank := func(n nodesource.Node) int {
		switch {
		case n.Name == cfg.NodeName:
			return 0
		case routed != nil && routed(n):
			return 1
		}
		return 2
	}
	nodes = slices.Clone(nodes)
	slices.SortStableFunc(nodes, func(a, b nodesource.Node) int { return rank(a) - rank(b) })
	for _, n := range nodes {
		reason := ""
		switch {
		case !n.IP.IsValid():
			reason = "no IPv4 InternalIP address"
		case !n.PodCIDR.IsValid():
			reason = "no IPv4 pod CIDR assigned yet"
		case cfg.ClusterCIDR.Contains(n.IP):
			reason = fmt.Sprintf("address %s is inside clusterCIDR %s", n.IP, cfg.ClusterCIDR)
		case n.PodCIDR.Bits() < cfg.ClusterCIDR.Bits() || !cfg.ClusterCIDR.Contains(n.PodCIDR.Addr()):
			reason = fmt.Sprintf("pod CIDR %s is outside clusterCIDR %s", n.PodCIDR, cfg.ClusterCIDR)
		case ips[n.IP] != "":
			reason = fmt.Sprintf("address %s is also node %s's", n.IP, ips[n.IP])
		}
		if reason == "" {
			for _, o := range out {
				if o.PodCIDR.Overlaps(n.PodCIDR) {
					reason = fmt.Sprintf("pod CIDR %s overlaps node %s's %s", n.PodCIDR, o.Name,
						o.PodCIDR)
					break
				}
			}
		}
		if reason != "" {
			skipped[n.Name] = reason
			continue
		}
		ips[n.IP] = n.Name
		out = append(out, config.Node{Name: n.Name, IP: n.IP, PodCIDR: n.PodCIDR})
	}
	return out, skipped
}

// pinnedRoutes returns a function that reports whether a node's route is in
// the node routes map that an earlier start pinned under dir, so that a
// restart keeps the routes of clashing nodes where they were. With no such
// map it returns nil: no node is routed.
func pinnedRoutes(dir string) func(nodesource.Node) bool {
	m, err := datapath.OpenMaps(dir)
	if err != nil {
		return nil
	}
	defer m.Close()
	routes, err := m.NodeRoutes()
	if err != nil {
		return nil
	}
	set := map[datapath.NodeRoute]bool{}
	for _, r := range routes {
		set[r] = true
	}
	return func(n nodesource.Node) bool {
		return set[datapath.NodeRoute{PodCIDR: n.PodCIDR, NodeIP: n.IP}]
	}
}

// waitForSelf waits until the source lists this node with an address and a
// pod range and returns base with the source's nodes. It logs what it waits
// for, and returns nil when ctx ends first.
func waitForSelf(ctx context.Context, base *config.Config, src nodesource.Source,
	log *slog.Logger) *config.Config {
	routed := pinnedRoutes(base.BPFFSDir)
	ticker := time.NewTicker(waitLogInterval)
	defer ticker.Stop()
	logged := ""
	for {
		nodes, skipped := selectNodes(base, src.Nodes(), routed)
		if slices.ContainsFunc(nodes, func(n config.Node) bool { return n.Name == base.NodeName }) {
			if logged != "" {
				log.Info("this node is in the node source", "node", base.NodeName)
			}
			return base.WithNodes(nodes)
		}
		reason, found := skipped[base.NodeName]
		if !found {
			reason = "the node source has no node of this name"
		}
		if reason != logged {
			log.Info("waiting for this node to get an address and a pod CIDR",
				"node", base.NodeName, "source", src.Name(), "reason", reason)
			logged = reason
		}
		select {
		case <-ctx.Done():
			return nil
		case <-src.Changed():
		case <-ticker.C:
			logged = ""
		}
	}
}

// SyncNodes applies the current node list of the node source. This node's
// own address and pod range stay those of the start: pods and the CNI
// configuration use them, so a change is logged and waits for a restart.
func (a *Agent) SyncNodes() error {
	next := a.withSourceNodes(a.base)
	return a.apply(next)
}

// withSourceNodes returns base with the nodes of the source that can be
// routed. With the Kubernetes source, this node keeps its entry of the
// config in effect, also when the source has another one: the clashes of
// the other nodes are judged against the range and address that run.
func (a *Agent) withSourceNodes(base *config.Config) *config.Config {
	routed := map[nodesource.Node]bool{}
	for _, n := range a.cfg.Nodes {
		routed[nodesource.Node{Name: n.Name, IP: n.IP, PodCIDR: n.PodCIDR}] = true
	}
	isRouted := func(n nodesource.Node) bool { return routed[n] }
	if base.Kubernetes == nil {
		nodes, skipped := selectNodes(base, a.source.Nodes(), isRouted)
		a.logSkipped(skipped)
		return base.WithNodes(nodes)
	}

	self := a.cfg.Self()
	source := a.source.Nodes()
	i := slices.IndexFunc(source, func(n nodesource.Node) bool { return n.Name == self.Name })
	seen := nodesource.Node{Name: self.Name}
	if i >= 0 {
		seen = source[i]
	}
	running := nodesource.Node{Name: self.Name, IP: self.IP, PodCIDR: self.PodCIDR}
	if seen != running && seen != a.selfConflict {
		a.logSelfChange(seen, running, i >= 0)
	}
	a.selfConflict = seen
	source = slices.DeleteFunc(slices.Clone(source), func(n nodesource.Node) bool {
		return n.Name == self.Name
	})
	nodes, skipped := selectNodes(base, append(source, running), isRouted)
	a.logSkipped(skipped)
	return base.WithNodes(nodes)
}

// logSelfChange logs a change of this node in the node source, which applies
// only at the next start: seen is its new entry, listed or not.
func (a *Agent) logSelfChange(seen, running nodesource.Node, listed bool) {
	if !listed || !seen.IP.IsValid() || !seen.PodCIDR.IsValid() {
		reason := "deleted"
		if listed {
			reason = "without an IPv4 InternalIP or pod CIDR"
		}
		a.log.Error("this node is "+reason+" in the node source: ferryd keeps its running "+
			"address and range, and a restart would wait until the node has both again",
			"node", running.Name, "running_node_ip", running.IP,
			"running_cidr", running.PodCIDR)
		return
	}
	a.log.Error("this node's address or pod CIDR changed in the node source: restart "+
		"ferryd to apply it; pods keep the old range until then", "node", running.Name,
		"node_ip", seen.IP, "cidr", seen.PodCIDR, "running_node_ip", running.IP,
		"running_cidr", running.PodCIDR)
}

// logSkipped logs each node that the source lists but ferry cannot route,
// once per reason.
func (a *Agent) logSkipped(skipped map[string]string) {
	for _, name := range slices.Sorted(maps.Keys(skipped)) {
		reason := skipped[name]
		if a.skipped[name] != reason {
			a.log.Warn("node not routed", "node", name, "reason", reason)
		}
	}
	a.skipped = skipped
}

// logNodeChanges logs the remote nodes that next adds, removes or changes,
// and counts them in the metrics.
func (a *Agent) logNodeChanges(prev, next *config.Config) {
	before := map[string]config.Node{}
	for _, n := range prev.RemoteNodes() {
		before[n.Name] = n
	}
	type change struct {
		msg       string
		node, was config.Node
	}
	var changes []change
	added, changed, removed := 0, 0, 0
	for _, n := range next.RemoteNodes() {
		was, found := before[n.Name]
		delete(before, n.Name)
		switch {
		case !found:
			changes = append(changes, change{msg: "node added", node: n})
			added++
		case was != n:
			changes = append(changes, change{msg: "node changed", node: n, was: was})
			changed++
		}
	}
	for _, n := range prev.RemoteNodes() {
		if _, left := before[n.Name]; left {
			changes = append(changes, change{msg: "node removed", node: n})
			removed++
		}
	}
	if len(changes) == 0 {
		return
	}

	level := slog.LevelInfo
	if len(changes) > maxNodeChangeLines {
		level = slog.LevelDebug
		a.log.Info("nodes changed", "added", added, "changed", changed, "removed", removed)
	}
	for _, c := range changes {
		attrs := []any{"node", c.node.Name, "node_ip", c.node.IP, "cidr", c.node.PodCIDR}
		if c.msg == "node changed" {
			attrs = append(attrs, "old_node_ip", c.was.IP, "old_cidr", c.was.PodCIDR)
		}
		a.log.Log(context.Background(), level, c.msg, attrs...)
	}
	if a.metrics != nil {
		a.metrics.NodesChanged(added, changed, removed)
	}
}

// updateNodeMetrics records the number of routed and skipped nodes.
func (a *Agent) updateNodeMetrics() {
	if a.metrics != nil {
		a.metrics.SetNodes(len(a.cfg.Nodes), len(a.skipped))
	}
}
