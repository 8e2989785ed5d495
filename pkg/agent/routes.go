package agent

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ferrynet/ferry/pkg/config"
)

// RouteProtocol marks the kernel routes that ferryd installs, so that
// `ip route show proto 102` lists them and a sync removes only its own.
// iproute2 6.1 names no protocol 102 in /usr/share/iproute2/rt_protos.
const RouteProtocol netlink.RouteProtocol = 0x66

// kernelRoute sends a remote node's pod range to that node, on link.
type kernelRoute struct {
	Dst netip.Prefix
	Gw  netip.Addr
}

// desiredRoutes returns a route for every remote node whose IP lies in one
// of the device's subnets. Nodes in other subnets get none: the default
// route and the underlay's routes for pod ranges carry their traffic.
func desiredRoutes(remotes []config.Node, subnets []netip.Prefix) []kernelRoute {
	var out []kernelRoute
	for _, n := range remotes {
		onLink := slices.ContainsFunc(subnets, func(p netip.Prefix) bool {
			return p.Masked().Contains(n.IP)
		})
		if onLink {
			out = append(out, kernelRoute{Dst: n.PodCIDR, Gw: n.IP})
		}
	}
	return out
}

// routeConflict is a desired route that ferryd did not install because a
// route of another protocol has the same destination and metric.
type routeConflict struct {
	Dst      netip.Prefix
	Protocol netlink.RouteProtocol
}

// syncKernelRoutes makes ferry's routes in the main table equal to want, all
// on the interface ifindex: it replaces the wanted routes first and deletes
// the stale ones after, so a pod range that stays is always routed. Routes of
// other protocols are never changed. A wanted destination that another
// protocol's route already has at metric 0 is skipped and returned.
func syncKernelRoutes(ifindex int, want []kernelRoute) ([]routeConflict, error) {
	filter := &netlink.Route{Table: unix.RT_TABLE_MAIN}
	existing, err := netlinksafe.RouteListFiltered(netlink.FAMILY_V4, filter,
		netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list IPv4 routes: %w", err)
	}
	var ours []netlink.Route
	foreign := map[netip.Prefix]netlink.RouteProtocol{}
	for _, r := range existing {
		dst, ok := routeDst(r)
		if !ok {
			continue
		}
		if r.Protocol == RouteProtocol {
			ours = append(ours, r)
		} else if r.Priority == 0 {
			foreign[dst] = r.Protocol
		}
	}

	var (
		conflicts []routeConflict
		errs      []error
	)
	desired := map[netip.Prefix]bool{}
	for _, w := range want {
		if proto, conflict := foreign[w.Dst]; conflict {
			conflicts = append(conflicts, routeConflict{Dst: w.Dst, Protocol: proto})
			continue
		}
		desired[w.Dst] = true
		route := netlink.Route{
			LinkIndex: ifindex,
			Dst:       ipNet(w.Dst),
			Gw:        w.Gw.AsSlice(),
			Flags:     int(netlink.FLAG_ONLINK),
			Protocol:  RouteProtocol,
			Table:     unix.RT_TABLE_MAIN,
			Scope:     netlink.SCOPE_UNIVERSE,
		}
		if err := netlink.RouteReplace(&route); err != nil {
			errs = append(errs, fmt.Errorf("replace route %s via %s: %w", w.Dst, w.Gw, err))
		}
	}

	// A route that RouteReplace rewrote has the key (table, destination,
	// metric) of a desired one and must stay.
	for _, r := range ours {
		dst, _ := routeDst(r)
		if desired[dst] && r.Priority == 0 {
			continue
		}
		if err := netlink.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete stale route %s: %w", dst, err))
		}
	}
	return conflicts, errors.Join(errs...)
}

// removeKernelRoutes deletes every route of ferry's protocol in the main table.
func removeKernelRoutes() error {
	_, err := syncKernelRoutes(0, nil)
	return err
}

func routeDst(r netlink.Route) (netip.Prefix, bool) {
	if r.Dst == nil {
		return netip.Prefix{}, false
	}
	ip, ok := netip.AddrFromSlice(r.Dst.IP.To4())
	if !ok {
		return netip.Prefix{}, false
	}
	ones, bits := r.Dst.Mask.Size()
	if bits != 32 {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(ip, ones), true
}

func ipNet(p netip.Prefix) *net.IPNet {
	p = p.Masked()
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}
}
