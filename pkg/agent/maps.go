package agent

import (
	"fmt"
	"net/netip"

	"github.com/ferrynet/ferry/pkg/config"
	"github.com/ferrynet/ferry/pkg/datapath"
)

// nodeRoutes returns the node routes map's entries: every remote node's pod range.
func nodeRoutes(cfg *config.Config) []datapath.NodeRoute {
	var out []datapath.NodeRoute
	for _, n := range cfg.RemoteNodes() {
		out = append(out, datapath.NodeRoute{PodCIDR: n.PodCIDR, NodeIP: n.IP})
	}
	return out
}

// masqueradeExclusions returns the destinations that are never masqueraded:
// the cluster CIDR, the configured exclusions and every node IP. Pods reach
// nodes with their own address, so that a node's replies to a pod, and the
// pod's replies to a node, keep the pod's address.
func masqueradeExclusions(cfg *config.Config) []netip.Prefix {
	out := []netip.Prefix{cfg.ClusterCIDR}
	out = append(out, cfg.Masquerade.ExcludeCIDRs...)
	for _, n := range cfg.Nodes {
		out = append(out, netip.PrefixFrom(n.IP, 32))
	}
	return out
}

// syncMaps makes the masquerade exclusions and node routes maps match cfg.
// Each map gets its new entries before it loses stale ones.
func (a *Agent) syncMaps(cfg *config.Config) error {
	if err := a.dp.SyncMasqueradeExclusions(masqueradeExclusions(cfg)); err != nil {
		return fmt.Errorf("sync masquerade exclusions: %w", err)
	}
	if err := a.dp.SyncNodeRoutes(nodeRoutes(cfg)); err != nil {
		return fmt.Errorf("sync node routes: %w", err)
	}
	return nil
}

// writeSettings writes this node's settings to the node_config map.
func (a *Agent) writeSettings(cfg *config.Config, uplink, pods datapath.AttachMode) error {
	s := datapath.NodeSettings{
		NodeIP:        a.node.IP,
		PodCIDR:       cfg.Self().PodCIDR,
		UplinkIfIndex: a.node.IfIndex,
		Masquerade:    cfg.Masquerade.Enabled,
		NATPortMin:    cfg.Masquerade.PortMin,
		NATPortMax:    cfg.Masquerade.PortMax,
		UplinkClsact:  uplink == datapath.AttachClsact,
		PodClsact:     pods == datapath.AttachClsact,
	}
	if err := a.dp.SetSettings(s); err != nil {
		return fmt.Errorf("write node settings: %w", err)
	}
	return nil
}
