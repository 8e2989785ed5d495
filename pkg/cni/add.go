package cni

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ferrynet/ferry/pkg/datapath"
)

// Add implements CNI ADD: it allocates the pod's addresses with the IPAM plugin, creates the
// veth pair, configures both ends, registers the endpoint in the dataplane, attaches the pod
// program and prints the result. A failure undoes every step done before it.
func (p *Plugin) Add(args *skel.CmdArgs) error {
	ctx := context.Background()
	conf, err := ParseNetConf(args.StdinData)
	if err != nil {
		return toCNIError(err)
	}
	pod, err := ParseArgs(args.Args)
	if err != nil {
		return toCNIError(err)
	}
	result, err := p.add(ctx, args, conf, pod)
	if err != nil {
		return toCNIError(err)
	}

	versioned, err := result.GetAsVersion(conf.CNIVersion)
	if err != nil {
		return toCNIError(fmt.Errorf("convert result to version %s: %w", conf.CNIVersion, err))
	}
	if err := versioned.PrintTo(p.stdout()); err != nil {
		return toCNIError(withCode(types.ErrIOFailure, fmt.Errorf("print result: %w", err)))
	}
	return nil
}

// addRequest is the state of one ADD.
type addRequest struct {
	args     *skel.CmdArgs
	conf     *NetConf
	pod      PodArgs
	maps     *datapath.EndpointMaps
	settings datapath.NodeSettings
	podNS    ns.NetNS
	hostName string
	mtu      int
	undo     undoStack
}

func (p *Plugin) add(ctx context.Context, args *skel.CmdArgs, conf *NetConf, pod PodArgs) (
	*current.Result, error) {
	maps, settings, err := openDataplane(conf.BPFFSDir)
	if err != nil {
		return nil, err
	}
	defer maps.Close()

	podNS, err := ns.GetNS(args.Netns)
	if err != nil {
		return nil, withCode(types.ErrInvalidEnvironmentVariables,
			fmt.Errorf("open pod network namespace %q (CNI_NETNS): %w", args.Netns, err))
	}
	defer podNS.Close()

	req := &addRequest{
		args:     args,
		conf:     conf,
		pod:      pod,
		maps:     maps,
		settings: settings,
		podNS:    podNS,
		hostName: HostVethName(args.ContainerID, args.IfName),
		mtu:      conf.MTU,
	}
	// A repeated ADD would get the same address from the IPAM plugin, and undoing its failure
	// would release the address of the running pod: stop before IPAM.
	if _, err := netlinksafe.LinkByName(req.hostName); err == nil {
		return nil, withCode(ErrCodeInterfaceExists, fmt.Errorf("host veth %s (container %s, "+
			"interface %s) exists: run CNI DEL for the container first, or delete the "+
			"interface if nothing uses it", req.hostName, args.ContainerID, args.IfName))
	}
	if req.mtu == 0 {
		req.mtu = p.nodeMTU(settings.NodeIP)
	}

	result, err := p.setUp(ctx, req)
	if err != nil {
		if undoErr := req.undo.run(); undoErr != nil {
			p.log().Error("undo partial ADD", "container_id", args.ContainerID,
				"pod", pod.String(), "interface", req.hostName, "error", undoErr)
			return nil, fmt.Errorf("%w; undoing the partial ADD also failed: %w", err, undoErr)
		}
		return nil, err
	}
	return result, nil
}

// setUp runs the steps of ADD, each pushing its undo step onto req.undo. The IPAM plugin runs
// as a process of its own, and the veth pair is created and the pod program attached while it
// works, since neither needs the pod's address.
func (p *Plugin) setUp(ctx context.Context, req *addRequest) (*current.Result, error) {
	type allocation struct {
		result *current.Result
		err    error
	}
	allocated := make(chan allocation, 1)
	go func() {
		result, err := ipamAdd(ctx, req.conf, req.args.StdinData)
		allocated <- allocation{result, err}
	}()
	pair, vethErr := p.setUpHostSide(req)
	ipam := <-allocated
	if ipam.err == nil {
		req.undo.push("release address", func() error {
			return ipamDel(ctx, req.conf, req.args.StdinData)
		})
	}
	if vethErr != nil {
		return nil, vethErr
	}
	if ipam.err != nil {
		return nil, ipam.err
	}
	podIPs, err := podIPv4s(req.conf.IPAM.Type, ipam.result)
	if err != nil {
		return nil, err
	}

	result := buildResult(req.args, pair, ipam.result)
	if err := configurePod(req.podNS, pair, result); err != nil {
		return nil, withCode(ErrCodeNetworkSetup, err)
	}
	if err := addHostRoutes(pair.host, podIPs); err != nil {
		return nil, withCode(ErrCodeNetworkSetup, err)
	}

	for _, ip := range podIPs {
		ep := datapath.Endpoint{
			IP:      ip,
			IfIndex: pair.host.Attrs().Index,
			PodMAC:  pair.podMAC,
			HostMAC: pair.host.Attrs().HardwareAddr,
		}
		if err := req.maps.PutEndpoint(ep); err != nil {
			return nil, withCode(ErrCodeDatapath, explainPutEndpoint(ip, err))
		}
		req.undo.push("delete endpoint "+ip.String(), func() error {
			return req.maps.DeleteEndpoint(ip)
		})
	}
	return result, nil
}

// setUpHostSide creates the veth pair, prepares its host side and attaches the pod program
// there. The pod's interface stays down until its endpoint is in the map, and the program
// drops IPv4 packets whose source is not in the map.
func (p *Plugin) setUpHostSide(req *addRequest) (*vethPair, error) {
	pair, err := createVeth(req.podNS, req.hostName, req.args.IfName, req.mtu)
	if err != nil {
		return nil, err
	}
	// Deleting the veth pair also deletes the addresses, routes and cls_bpf filters on it.
	req.undo.push("delete veth pair "+req.hostName, func() error {
		return deleteHostVeth(pair.host)
	})

	if err := p.labelHostVeth(req, pair.host); err != nil {
		return nil, withCode(ErrCodeNetworkSetup, err)
	}
	if err := configureHost(pair.host); err != nil {
		return nil, withCode(ErrCodeNetworkSetup, err)
	}

	// A failed attach leaves no link behind.
	err = datapath.AttachPod(req.conf.BPFFSDir, req.hostName, pair.host.Attrs().Index,
		req.settings.PodAttachMode())
	if err != nil {
		if errors.Is(err, datapath.ErrNotLoaded) {
			return nil, dataplaneError(req.conf.BPFFSDir, err)
		}
		return nil, withCode(ErrCodeDatapath,
			fmt.Errorf("attach pod program to %s: %w", req.hostName, err))
	}
	// A tcx link outlives its interface as a pin.
	req.undo.push("detach pod program from "+req.hostName, func() error {
		return datapath.DetachPod(req.conf.BPFFSDir, req.hostName)
	})
	return pair, nil
}

// labelHostVeth sets the alias of the host veth to the attachment it belongs to, which GC
// needs to release the address of a stale attachment. An attachment whose alias does not
// fit keeps no alias, and GC then releases its address only through the IPAM plugin.
func (p *Plugin) labelHostVeth(req *addRequest, host netlink.Link) error {
	alias, ok := attachmentAlias(req.conf.Name,
		attachment{containerID: req.args.ContainerID, ifName: req.args.IfName})
	if !ok {
		p.log().Debug("host veth left without alias", "container_id", req.args.ContainerID,
			"interface", req.hostName)
		return nil
	}
	if err := netlink.LinkSetAlias(host, alias); err != nil {
		return fmt.Errorf("set alias of %s: %w", req.hostName, err)
	}
	return nil
}

// explainPutEndpoint adds the fix to a failed update of the endpoints map. The map's size
// is fixed when ferryd first loads it, and a full map rejects new keys with E2BIG.
func explainPutEndpoint(ip netip.Addr, err error) error {
	if errors.Is(err, unix.E2BIG) {
		return fmt.Errorf("%w: the endpoints map is full; delete pods that no longer run, "+
			"or run CNI GC to remove the entries of stale ones, then retry pod %s", err, ip)
	}
	return err
}

// podIPv4s returns the addresses of the IPAM result. ferry networks pods with IPv4 only, so
// it rejects a result without an IPv4 address or with an IPv6 one.
func podIPv4s(ipamType string, result *current.Result) ([]netip.Addr, error) {
	var ips []netip.Addr
	for _, ipc := range result.IPs {
		addr, ok := netip.AddrFromSlice(ipc.Address.IP)
		if !ok {
			return nil, withCode(ErrCodeIPAMResult, fmt.Errorf("IPAM plugin %s returned "+
				"invalid address %q", ipamType, ipc.Address.String()))
		}
		addr = addr.Unmap()
		if !addr.Is4() {
			return nil, withCode(ErrCodeIPAMResult, fmt.Errorf("IPAM plugin %s returned "+
				"IPv6 address %s: ferry networks pods with IPv4 only; remove IPv6 ranges "+
				"from the ipam configuration", ipamType, addr))
		}
		ips = append(ips, addr)
	}
	if len(ips) == 0 {
		return nil, withCode(ErrCodeIPAMResult, fmt.Errorf("IPAM plugin %s returned no "+
			"IPv4 address: give it an IPv4 range", ipamType))
	}
	return ips, nil
}

// buildResult returns the ADD result: the host side of the veth as interface 0, the pod's
// interface as interface 1 with the IPAM addresses, and the IPAM routes and DNS.
func buildResult(args *skel.CmdArgs, pair *vethPair, ipamResult *current.Result) *current.Result {
	result := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{
			{Name: pair.host.Attrs().Name, Mac: pair.host.Attrs().HardwareAddr.String()},
			{Name: pair.podName, Mac: pair.podMAC.String(), Sandbox: args.Netns},
		},
		Routes: ipamResult.Routes,
		DNS:    ipamResult.DNS,
	}
	for _, ipc := range ipamResult.IPs {
		c := *ipc
		c.Interface = current.Int(1)
		result.IPs = append(result.IPs, &c)
	}
	return result
}

// nodeMTU returns the MTU of the interface that holds nodeIP, or DefaultMTU when no
// interface of the node's namespace holds it.
func (p *Plugin) nodeMTU(nodeIP netip.Addr) int {
	addrs, err := netlinksafe.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		p.log().Warn("list addresses to find the node IP's MTU", "node_ip", nodeIP,
			"mtu", DefaultMTU, "error", err)
		return DefaultMTU
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); !ok || ip.Unmap() != nodeIP {
			continue
		}
		link, err := netlink.LinkByIndex(a.LinkIndex)
		if err != nil {
			p.log().Warn("find the node IP's interface", "node_ip", nodeIP,
				"ifindex", a.LinkIndex, "mtu", DefaultMTU, "error", err)
			return DefaultMTU
		}
		return link.Attrs().MTU
	}
	return DefaultMTU
}

// undoStack collects the undo steps of ADD.
type undoStack struct {
	steps []undoStep
}

type undoStep struct {
	name string
	fn   func() error
}

func (u *undoStack) push(name string, fn func() error) {
	u.steps = append(u.steps, undoStep{name: name, fn: fn})
}

// run runs the steps in reverse order, all of them even when some fail.
func (u *undoStack) run() error {
	var errs []error
	for i := len(u.steps) - 1; i >= 0; i-- {
		if err := u.steps[i].fn(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", u.steps[i].name, err))
		}
	}
	u.steps = nil
	return errors.Join(errs...)
}
