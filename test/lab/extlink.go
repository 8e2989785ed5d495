package lab

import (
	"fmt"

	"github.com/vishvananda/netlink"
)

// extAdvMSS is the TCP MSS that ext advertises after SetExtMTU: the one of a
// 1500-byte path, 1500 less the IPv4 and TCP headers.
const extAdvMSS = 1460

// SetExtMTU sets the MTU of the link between the vpc router and ext, on
// both ends, while ext keeps advertising the TCP MSS of a 1500-byte path, as
// a host does whose own link is wide but a hop on the way is not. Packets
// from the cluster larger than mtu then need fragmentation at the router,
// which it does, or answers with ICMP "fragmentation needed" when DF is set.
func (l *Lab) SetExtMTU(mtu int) error {
	ends := []struct {
		ns   *Namespace
		link string
	}{{l.VPC, "ext0"}, {l.Ext, "eth0"}}
	for _, end := range ends {
		err := end.ns.withHandle(func(h *netlink.Handle) error {
			link, err := h.LinkByName(end.link)
			if err != nil {
				return fmt.Errorf("find link %s: %w", end.link, err)
			}
			return h.LinkSetMTU(link, mtu)
		})
		if err != nil {
			return fmt.Errorf("set MTU %d on %s in %s: %w", mtu, end.link, end.ns, err)
		}
	}

	err := l.Ext.withHandle(func(h *netlink.Handle) error {
		for _, sn := range subnets {
			r := &netlink.Route{Dst: ipNet(sn.prefix), Gw: vpcExtIP.Addr().AsSlice(),
				AdvMSS: extAdvMSS}
			if err := h.RouteReplace(r); err != nil {
				return fmt.Errorf("set advmss %d on the route to %v: %w", extAdvMSS,
					sn.prefix, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("configure routes of %s: %w", l.Ext, err)
	}
	l.logf("lab %s: MTU %d between the vpc router and ext", l.Name, mtu)
	return nil
}
