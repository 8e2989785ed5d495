package cni

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// vethPair is a pod's veth pair. Functions without a namespace argument work in the calling
// thread's network namespace, which is the node's: the runtime starts the plugin there.
type vethPair struct {
	host     netlink.Link // the host side, in the node's namespace
	podName  string
	podIndex int
	podMAC   net.HardwareAddr
}

// createVeth creates the veth pair with the host side in the node's namespace and the pod
// side, named podIfName, in podNS. Neither side is up yet.
func createVeth(podNS ns.NetNS, hostName, podIfName string, mtu int) (*vethPair, error) {
	attrs := netlink.NewLinkAttrs()
	attrs.Name = hostName
	attrs.MTU = mtu
	veth := &netlink.Veth{
		LinkAttrs:     attrs,
		PeerName:      podIfName,
		PeerNamespace: netlink.NsFd(int(podNS.Fd())),
	}
	if err := netlink.LinkAdd(veth); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return nil, withCode(ErrCodeInterfaceExists, fmt.Errorf("create veth pair: "+
				"interface %s exists in the pod namespace %s, or %s in the node's: delete "+
				"it or choose another CNI_IFNAME: %w", podIfName, podNS.Path(), hostName, err))
		}
		return nil, withCode(ErrCodeNetworkSetup,
			fmt.Errorf("create veth pair %s and %s: %w", hostName, podIfName, err))
	}

	pair := &vethPair{podName: podIfName}
	host, err := netlinksafe.LinkByName(hostName)
	if err != nil {
		// LinkDel looks the name up once more. Should that fail too, the DEL that runtimes
		// run after a failed ADD deletes the pair by name.
		_ = netlink.LinkDel(veth)
		return nil, withCode(ErrCodeNetworkSetup,
			fmt.Errorf("find new interface %s: %w", hostName, err))
	}
	pair.host = host

	err = podNS.Do(func(ns.NetNS) error {
		pod, err := netlinksafe.LinkByName(podIfName)
		if err != nil {
			return fmt.Errorf("find new interface %s in pod namespace %s: %w", podIfName,
				podNS.Path(), err)
		}
		pair.podIndex = pod.Attrs().Index
		pair.podMAC = pod.Attrs().HardwareAddr
		return nil
	})
	if err != nil {
		_ = netlink.LinkDel(host)
		return nil, withCode(ErrCodeNetworkSetup, err)
	}
	return pair, nil
}

// deleteHostVeth deletes the host side of a veth pair, which deletes the pod side and the
// host routes through it too. A missing interface is not an error.
func deleteHostVeth(link netlink.Link) error {
	err := netlink.LinkDel(link)
	if err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete interface %s: %w", link.Attrs().Name, err)
	}
	return nil
}

// errNotVeth means an interface has a host veth name but is no veth, so ferry did not create it.
var errNotVeth = errors.New("interface is not a veth")

// findHostVeth returns the veth named name in the node's namespace, or nil when there is no
// interface of that name. It returns an error wrapping errNotVeth when the interface of that
// name is not a veth.
func findHostVeth(name string) (netlink.Link, error) {
	link, err := netlinksafe.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("find interface %s: %w", name, err)
	}
	if link.Type() != "veth" {
		return nil, fmt.Errorf("%w: %s has type %s, so ferry did not create it; rename or "+
			"delete it", errNotVeth, name, link.Type())
	}
	return link, nil
}

// configurePod disables IPv6 on the pod's interface, because the programs drop every frame
// that is not IPv4 or ARP, then adds the addresses of result, sets the interface up and adds
// the routes of result.
func configurePod(podNS ns.NetNS, pair *vethPair, result *current.Result) error {
	return podNS.Do(func(ns.NetNS) error {
		name := pair.podName
		if err := writeSysctl(ipv6Sysctl(name, "disable_ipv6"), "1"); err != nil &&
			!errors.Is(err, fs.ErrNotExist) {
			return err
		}
		link := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: name, Index: pair.podIndex}}
		for _, ipc := range result.IPs {
			if err := netlink.AddrAdd(link, &netlink.Addr{IPNet: &ipc.Address}); err != nil {
				return fmt.Errorf("add address %s to %s in pod namespace %s: %w",
					ipc.Address.String(), name, podNS.Path(), err)
			}
		}
		if err := netlink.LinkSetUp(link); err != nil {
			return fmt.Errorf("set %s up in pod namespace %s: %w", name, podNS.Path(), err)
		}
		for _, r := range result.Routes {
			route := podRoute(pair.podIndex, r, routeGateway(r, result.IPs))
			// Several routes to one destination form a multipath route.
			if err := netlink.RouteAddEcmp(route); err != nil {
				return fmt.Errorf("add route %s via %s dev %s in pod namespace %s: %w",
					r.Dst.String(), route.Gw, name, podNS.Path(), err)
			}
		}
		return nil
	})
}

// routeGateway returns the gateway of the pod's route r: its own, or for an IPv4 route that
// names none the first IPv4 gateway of the IPAM result's addresses.
func routeGateway(r *types.Route, ips []*current.IPConfig) net.IP {
	if r.GW != nil || r.Dst.IP.To4() == nil {
		return r.GW
	}
	for _, ipc := range ips {
		if ipc.Gateway.To4() != nil {
			return ipc.Gateway
		}
	}
	return nil
}

// podRoute returns the pod's route r through the interface ifindex via gateway.
func podRoute(ifindex int, r *types.Route, gateway net.IP) *netlink.Route {
	route := &netlink.Route{
		LinkIndex: ifindex,
		Dst:       &r.Dst,
		Gw:        gateway,
		Priority:  r.Priority,
		MTU:       r.MTU,
		AdvMSS:    r.AdvMSS,
	}
	if r.Table != nil {
		route.Table = *r.Table
	}
	if r.Scope != nil {
		route.Scope = netlink.Scope(*r.Scope)
	}
	return route
}

// configureHost prepares the host side of the veth: no IPv6 and no reverse-path filter, since
// pod addresses are reachable only through their /32 routes. It sets the interface up.
func configureHost(link netlink.Link) error {
	name := link.Attrs().Name
	if err := writeSysctl(ipv6Sysctl(name, "disable_ipv6"), "1"); err != nil &&
		!errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := writeSysctl(ipv4Sysctl(name, "rp_filter"), "0"); err != nil {
		return err
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	return nil
}

// addHostRoutes adds a route to each pod address through the host side of the veth, the
// path of host-to-pod traffic such as kubelet probes.
func addHostRoutes(link netlink.Link, podIPs []netip.Addr) error {
	for _, ip := range podIPs {
		route := hostRoute(link, ip)
		if err := netlink.RouteAdd(route); err != nil {
			return fmt.Errorf("add route %s dev %s: %w", route.Dst, link.Attrs().Name, err)
		}
	}
	return nil
}

// hostRoute returns the node's route to a pod address: ip/32 dev link scope link.
func hostRoute(link netlink.Link, ip netip.Addr) *netlink.Route {
	return &netlink.Route{
		LinkIndex: link.Attrs().Index,
		Dst:       &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(32, 32)},
		Scope:     netlink.SCOPE_LINK,
	}
}

func ipv4Sysctl(ifName, key string) string {
	return filepath.Join("/proc/sys/net/ipv4/conf", ifName, key)
}

func ipv6Sysctl(ifName, key string) string {
	return filepath.Join("/proc/sys/net/ipv6/conf", ifName, key)
}

// writeSysctl writes a sysctl of the calling thread's network namespace. The file is missing
// (fs.ErrNotExist) where the kernel has no IPv6.
func writeSysctl(path, value string) error {
	if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
		return fmt.Errorf("set sysctl %s to %s: %w", path, value, err)
	}
	return nil
}
