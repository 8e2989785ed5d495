package cni

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/ferrynet/ferry/pkg/datapath"
)

// Check implements CNI CHECK. It has the IPAM plugin check the addresses, then compares the
// pod's network with the prevResult of ADD: the veth pair, the pod interface's addresses and
// routes, the endpoint entries, the pod program's attachment and the host routes. The error
// names every mismatch.
func (p *Plugin) Check(args *skel.CmdArgs) error {
	ctx := context.Background()
	conf, err := ParseNetConf(args.StdinData)
	if err != nil {
		return toCNIError(err)
	}
	if conf.prevResult == nil {
		return toCNIError(withCode(types.ErrInvalidNetworkConfig,
			fmt.Errorf("missing prevResult: CHECK needs the result of ADD")))
	}
	if err := ipamCheck(ctx, conf, args.StdinData); err != nil {
		return toCNIError(err)
	}

	maps, settings, err := openDataplane(conf.BPFFSDir)
	if err != nil {
		return toCNIError(err)
	}
	defer maps.Close()
	podNS, err := ns.GetNS(args.Netns)
	if err != nil {
		return toCNIError(withCode(types.ErrInvalidEnvironmentVariables,
			fmt.Errorf("open pod network namespace %q (CNI_NETNS): %w", args.Netns, err)))
	}
	defer podNS.Close()

	c := &checker{
		args:     args,
		conf:     conf,
		result:   conf.prevResult,
		maps:     maps,
		settings: settings,
		podNS:    podNS,
		hostName: HostVethName(args.ContainerID, args.IfName),
	}
	c.run()
	if len(c.problems) > 0 {
		return toCNIError(withCode(ErrCodeCheckFailed, fmt.Errorf("check container %s "+
			"interface %s: %s", args.ContainerID, args.IfName, strings.Join(c.problems, "; "))))
	}
	return nil
}

// checker compares the network of one pod with its ADD result and collects the mismatches.
type checker struct {
	args     *skel.CmdArgs
	conf     *NetConf
	result   *current.Result
	maps     *datapath.EndpointMaps
	settings datapath.NodeSettings
	podNS    ns.NetNS
	hostName string

	host     netlink.Link
	problems []string
}

func (c *checker) addf(format string, args ...any) {
	c.problems = append(c.problems, fmt.Sprintf(format, args...))
}

func (c *checker) run() {
	c.checkHostVeth()
	podIface := c.checkResultInterfaces()
	if err := c.podNS.Do(func(ns.NetNS) error {
		c.checkPodInterface(podIface)
		return nil
	}); err != nil {
		c.addf("enter pod namespace %s: %v", c.podNS.Path(), err)
	}
	if c.host == nil {
		return
	}
	c.checkEndpoints()
	c.checkAttachment()
	c.checkHostRoutes()
}

func (c *checker) checkHostVeth() {
	host, err := findHostVeth(c.hostName)
	switch {
	case err != nil:
		c.addf("host veth: %v", err)
		return
	case host == nil:
		c.addf("host veth %s missing", c.hostName)
		return
	}
	c.host = host
	if host.Attrs().Flags&net.FlagUp == 0 {
		c.addf("host veth %s is down", c.hostName)
	}
}

// checkResultInterfaces checks the interfaces of the result and returns the pod's, or nil.
func (c *checker) checkResultInterfaces() *current.Interface {
	var podIface *current.Interface
	hostListed := false
	for _, iface := range c.result.Interfaces {
		switch {
		case iface.Name == c.args.IfName && iface.Sandbox == c.args.Netns:
			podIface = iface
		case iface.Name == c.hostName && iface.Sandbox == "":
			hostListed = true
			if c.host != nil && iface.Mac != c.host.Attrs().HardwareAddr.String() {
				c.addf("host veth %s has MAC %s, the result lists %s", c.hostName,
					c.host.Attrs().HardwareAddr, iface.Mac)
			}
		}
	}
	if !hostListed {
		c.addf("the result lists no host interface %s", c.hostName)
	}
	if podIface == nil {
		c.addf("the result lists no interface %s in sandbox %s", c.args.IfName, c.args.Netns)
	}
	return podIface
}

// checkPodInterface runs in the pod's namespace.
func (c *checker) checkPodInterface(want *current.Interface) {
	name := c.args.IfName
	link, err := netlinksafe.LinkByName(name)
	if err != nil {
		c.addf("pod interface %s missing: %v", name, err)
		return
	}
	if link.Type() != "veth" {
		c.addf("pod interface %s is a %s, not a veth", name, link.Type())
	}
	if c.host != nil && link.Attrs().ParentIndex != c.host.Attrs().Index {
		c.addf("pod interface %s is not the peer of host veth %s", name, c.hostName)
	}
	if want != nil && link.Attrs().HardwareAddr.String() != want.Mac {
		c.addf("pod interface %s has MAC %s, the result lists %s", name,
			link.Attrs().HardwareAddr, want.Mac)
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		c.addf("pod interface %s is down", name)
	}
	if v, err := os.ReadFile(ipv6Sysctl(name, "disable_ipv6")); err == nil &&
		!bytes.Equal(bytes.TrimSpace(v), []byte("1")) {
		c.addf("pod interface %s has IPv6 enabled", name)
	}

	addrs, err := netlinksafe.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		c.addf("list addresses of pod interface %s: %v", name, err)
		return
	}
	for _, ipc := range c.result.IPs {
		if !hasAddr(addrs, ipc.Address) {
			c.addf("pod interface %s lacks address %s", name, ipc.Address.String())
		}
	}

	routes, err := netlinksafe.RouteList(link, netlink.FAMILY_V4)
	if err != nil {
		c.addf("list routes of pod interface %s: %v", name, err)
		return
	}
	for _, r := range c.result.Routes {
		gw := routeGateway(r, c.result.IPs)
		if !hasRoute(routes, r.Dst, gw) {
			c.addf("pod route %s via %s missing", r.Dst.String(), gw)
		}
	}
}

func hasAddr(addrs []netlink.Addr, want net.IPNet) bool {
	for _, a := range addrs {
		if a.IP.Equal(want.IP) && bytes.Equal(a.Mask, want.Mask) {
			return true
		}
	}
	return false
}

func hasRoute(routes []netlink.Route, dst net.IPNet, gw net.IP) bool {
	wantDst := dst.String()
	for _, r := range routes {
		got := "0.0.0.0/0"
		if r.Dst != nil {
			got = r.Dst.String()
		}
		if got == wantDst && (gw == nil || r.Gw.Equal(gw)) {
			return true
		}
	}
	return false
}

func (c *checker) checkEndpoints() {
	index := c.host.Attrs().Index
	for _, ip := range resultIPv4s(c.result) {
		ep, found, err := c.maps.LookupEndpoint(ip)
		switch {
		case err != nil:
			c.addf("endpoint %s: %v", ip, err)
			continue
		case !found:
			c.addf("endpoint %s missing from the endpoints map", ip)
			continue
		}
		if ep.IfIndex != index {
			c.addf("endpoint %s has ifindex %d, host veth %s has %d", ip, ep.IfIndex,
				c.hostName, index)
		}
		if !bytes.Equal(ep.HostMAC, c.host.Attrs().HardwareAddr) {
			c.addf("endpoint %s has host MAC %s, host veth %s has %s", ip, ep.HostMAC,
				c.hostName, c.host.Attrs().HardwareAddr)
		}
		if podMAC := c.podMAC(); podMAC != "" && ep.PodMAC.String() != podMAC {
			c.addf("endpoint %s has pod MAC %s, the result lists %s", ip, ep.PodMAC, podMAC)
		}
	}
}

func (c *checker) podMAC() string {
	for _, iface := range c.result.Interfaces {
		if iface.Name == c.args.IfName && iface.Sandbox == c.args.Netns {
			return iface.Mac
		}
	}
	return ""
}

func (c *checker) checkAttachment() {
	// A pod may be in the other mode than the node's settings, so either counts.
	mode, err := datapath.PodAttachment(c.conf.BPFFSDir, c.hostName, c.host.Attrs().Index)
	switch {
	case err != nil:
		c.addf("pod program on %s: %v", c.hostName, err)
	case mode == "":
		c.addf("pod program not attached to host veth %s (%s mode): restart ferryd, which "+
			"attaches it to every pod", c.hostName, c.settings.PodAttachMode())
	}
}

func (c *checker) checkHostRoutes() {
	routes, err := netlinksafe.RouteList(c.host, netlink.FAMILY_V4)
	if err != nil {
		c.addf("list routes of host veth %s: %v", c.hostName, err)
		return
	}
	for _, ip := range resultIPv4s(c.result) {
		want := hostRoute(c.host, ip)
		found := false
		for _, r := range routes {
			if r.Dst != nil && r.Dst.String() == want.Dst.String() && r.Scope == want.Scope {
				found = true
				break
			}
		}
		if !found {
			c.addf("host route %s dev %s scope link missing", want.Dst, c.hostName)
		}
	}
}

// resultIPv4s returns the IPv4 addresses of a result.
func resultIPv4s(result *current.Result) []netip.Addr {
	var ips []netip.Addr
	for _, ipc := range result.IPs {
		if addr, ok := netip.AddrFromSlice(ipc.Address.IP); ok && addr.Unmap().Is4() {
			ips = append(ips, addr.Unmap())
		}
	}
	return ips
}
