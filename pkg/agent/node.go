package agent

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ferrynet/ferry/pkg/config"
)

// nodeInfo is the node's uplink device and address, resolved from the kernel
// at start.
type nodeInfo struct {
	Device  string
	IfIndex int
	MTU     int
	IP      netip.Addr
}

// resolveNode finds the uplink device and the node IP in the calling
// thread's network namespace, filling in what the config leaves out.
// Problems that the config can fix come back as a *config.Error.
func resolveNode(cfg *config.Config) (nodeInfo, error) {
	var (
		link netlink.Link
		err  error
	)
	if cfg.Device == "" {
		link, err = defaultRouteLink()
	} else {
		link, err = netlinksafe.LinkByName(cfg.Device)
		if errors.As(err, new(netlink.LinkNotFoundError)) {
			return nodeInfo{}, problem("device", "interface %q not found in this network "+
				"namespace: set device to the node's uplink, or remove it to use the "+
				"default route's interface", cfg.Device)
		}
		if err != nil {
			err = fmt.Errorf("find device %s: %w", cfg.Device, err)
		}
	}
	if err != nil {
		return nodeInfo{}, err
	}
	attrs := link.Attrs()
	node := nodeInfo{Device: attrs.Name, IfIndex: attrs.Index, MTU: attrs.MTU, IP: cfg.NodeIP}

	self := cfg.Self()
	if node.IP.IsValid() {
		// The config's validation compares nodeIP with a static node entry; the
		// Kubernetes source's entry arrives only now.
		if node.IP != self.IP {
			return nodeInfo{}, problem("nodeIP", "%s differs from the address %s of node %q "+
				"in the node source: make them equal, or remove nodeIP", node.IP, self.IP,
				self.Name)
		}
		return node, nil
	}
	addrs, err := deviceAddrs(node.IfIndex)
	if err != nil {
		return nodeInfo{}, err
	}
	if len(addrs) == 0 {
		return nodeInfo{}, problem("nodeIP", "not set, and device %s has no IPv4 address "+
			"to take it from: set nodeIP: %s or give %s its address", node.Device, self.IP,
			node.Device)
	}
	node.IP = addrs[0].Addr()
	if node.IP != self.IP {
		return nodeInfo{}, problem("nodeIP", "not set, and the first IPv4 address %s of "+
			"device %s differs from the address %s of node %q in the node source (its "+
			"nodes entry or InternalIP): correct that address, or set nodeIP: %s if the "+
			"node owns it", node.IP, node.Device, self.IP, self.Name, self.IP)
	}
	return node, nil
}

func problem(field, format string, args ...any) *config.Error {
	return &config.Error{Problems: []config.Problem{{
		Field:   field,
		Message: fmt.Sprintf(format, args...),
	}}}
}

// defaultRouteLink returns the interface of the IPv4 default route of the
// main table; among several, the one with the lowest metric.
func defaultRouteLink() (netlink.Link, error) {
	filter := &netlink.Route{Table: unix.RT_TABLE_MAIN}
	routes, err := netlinksafe.RouteListFiltered(netlink.FAMILY_V4, filter, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list IPv4 routes: %w", err)
	}
	var best *netlink.Route
	for i, r := range routes {
		if r.Type != unix.RTN_UNICAST {
			continue
		}
		if r.Dst != nil {
			if ones, _ := r.Dst.Mask.Size(); ones != 0 {
				continue
			}
		}
		if best == nil || r.Priority < best.Priority {
			best = &routes[i]
		}
	}
	if best == nil {
		return nil, problem("device", "not set, and there is no IPv4 default route to "+
			"take the interface from: set device to the node's uplink, such as eth0")
	}
	if best.LinkIndex == 0 {
		return nil, problem("device", "not set, and the IPv4 default route has several "+
			"next hops: set device to the node's uplink, such as eth0")
	}
	link, err := netlink.LinkByIndex(best.LinkIndex)
	if err != nil {
		return nil, fmt.Errorf("find interface %d of the default route: %w", best.LinkIndex, err)
	}
	return link, nil
}

// deviceAddrs returns the IPv4 addresses of global scope of an interface,
// in the kernel's order, which puts primary addresses first.
func deviceAddrs(ifindex int) ([]netip.Prefix, error) {
	link, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return nil, fmt.Errorf("find interface %d: %w", ifindex, err)
	}
	addrs, err := netlinksafe.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list addresses of %s: %w", link.Attrs().Name, err)
	}
	var out []netip.Prefix
	for _, a := range addrs {
		if a.Scope != unix.RT_SCOPE_UNIVERSE {
			continue
		}
		ip, ok := netip.AddrFromSlice(a.IP.To4())
		if !ok {
			continue
		}
		ones, _ := a.Mask.Size()
		out = append(out, netip.PrefixFrom(ip, ones))
	}
	return out, nil
}

// deviceMTU returns the current MTU of an interface.
func deviceMTU(ifindex int) (int, error) {
	link, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return 0, fmt.Errorf("find interface %d: %w", ifindex, err)
	}
	return link.Attrs().MTU, nil
}
