package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Node is a node namespace: eth0 on a node subnet, a default route through the vpc router,
// and its own CNI state directories.
type Node struct {
	*Namespace
	// Name is the Kubernetes node name from NodeSpec.
	Name string
	// IP is the address of eth0.
	IP netip.Addr
	// PodCIDR is the pod address range of the node.
	PodCIDR netip.Prefix
	// Subnet is the index of the node segment, as in NodeSpec.
	Subnet int

	// StateDir is StateRoot/<lab>/<node>, which contains the directories below.
	StateDir string
	// NetDir is the CNI configuration directory of the node (net.d).
	NetDir string
	// IPAMDir is the data directory for host-local IPAM.
	IPAMDir string
	// CacheDir is the libcni cache directory of the node.
	CacheDir string

	// vpcPort is the name of the veth end in the vpc namespace, such as "n0".
	vpcPort string
	// ferryd is the node agent that StartFerryd started, if any.
	ferryd *Process
}

// BPFFSDir returns /sys/fs/bpf/ferry-lab-<lab>-<node>, the directory where a dataplane on
// this node should pin its BPF objects. The lab does not create it, but removes it on
// teardown.
func (n *Node) BPFFSDir() string {
	return filepath.Join(bpffsRoot, "ferry-lab-"+n.lab.Name+"-"+n.Name)
}

// Gateway returns the vpc router address on the node subnet, the node's default gateway.
func (n *Node) Gateway() netip.Addr { return subnets[n.Subnet].gateway }

// SubnetPrefix returns the node subnet, such as 10.0.1.0/24.
func (n *Node) SubnetPrefix() netip.Prefix { return subnets[n.Subnet].prefix }

// setupVPC configures the router: bridges for the node subnets with their gateways,
// forwarding, no ICMP redirects and the TTL rule that hides the router between nodes of
// one subnet.
func (l *Lab) setupVPC(ctx context.Context) error {
	err := l.VPC.setSysctls([][2]string{
		{"net/ipv4/ip_forward", "1"},
		{"net/ipv4/conf/all/send_redirects", "0"},
		{"net/ipv4/conf/default/send_redirects", "0"},
		{"net/ipv4/conf/all/rp_filter", "0"},
		{"net/ipv4/conf/default/rp_filter", "0"},
	})
	if err != nil {
		return err
	}
	// With bridge netfilter on (the default in a new namespace), frames that br0 switches
	// between two nodes would pass the iptables FORWARD chain with -i br0 -o br0 and get
	// the TTL increment meant for routed packets only.
	if err := l.VPC.setSysctlsIfPresent([][2]string{
		{"net/bridge/bridge-nf-call-iptables", "0"},
		{"net/bridge/bridge-nf-call-ip6tables", "0"},
		{"net/bridge/bridge-nf-call-arptables", "0"},
	}); err != nil {
		return err
	}

	err = l.VPC.withHandle(func(h *netlink.Handle) error {
		for i, sn := range subnets {
			br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: sn.bridge}}
			if err := h.LinkAdd(br); err != nil {
				return fmt.Errorf("create bridge %s in %s: %w", sn.bridge, l.VPC, err)
			}
			addrs := []netip.Prefix{netip.PrefixFrom(sn.gateway, sn.prefix.Bits())}
			if i == 0 {
				addrs = append(addrs, netip.PrefixFrom(OutsideHostIP, sn.prefix.Bits()))
			}
			if err := addAddrs(h, sn.bridge, addrs...); err != nil {
				return err
			}
			if err := setUp(h, sn.bridge); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := setSendRedirectsOff(l.VPC, "lo", subnets[0].bridge, subnets[1].bridge); err != nil {
		return err
	}

	// A cloud VPC router is not a visible hop between two hosts of one subnet. Packets that
	// the router forwards from br0 back into br0 lose one TTL in routing, and this rule
	// adds it back.
	_, err = l.VPC.Run(ctx, "iptables", "-w", "5", "-t", "mangle", "-A", "FORWARD",
		"-i", "br0", "-o", "br0", "-j", "TTL", "--ttl-inc", "1")
	if err != nil {
		return fmt.Errorf("add TTL rule to the vpc router: %w", err)
	}
	return nil
}

// setupExt connects the ext namespace to the router and gives it the internet addresses.
// ext routes back only to the node subnets, so it drops replies to unmasqueraded pods.
func (l *Lab) setupExt() error {
	err := l.Ext.setSysctls([][2]string{
		{"net/ipv4/conf/all/rp_filter", "0"},
		{"net/ipv4/conf/default/rp_filter", "0"},
	})
	if err != nil {
		return err
	}
	if err := l.addVeth("ext0", l.Ext); err != nil {
		return err
	}
	err = l.Ext.withHandle(func(h *netlink.Handle) error {
		if err := addAddrs(h, "eth0", extLinkIP, extHostIP); err != nil {
			return err
		}
		if err := setUp(h, "eth0"); err != nil {
			return err
		}
		for _, sn := range subnets {
			if err := addRoute(h, sn.prefix, vpcExtIP.Addr()); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	err = l.VPC.withHandle(func(h *netlink.Handle) error {
		if err := addAddrs(h, "ext0", vpcExtIP); err != nil {
			return err
		}
		if err := setUp(h, "ext0"); err != nil {
			return err
		}
		return addRoute(h, internet, extLinkIP.Addr())
	})
	if err != nil {
		return err
	}
	return setSendRedirectsOff(l.VPC, "ext0")
}

// addNode creates the namespace of a node, links its eth0 to the bridge of its subnet and
// creates its state directories.
func (l *Lab) addNode(ctx context.Context, spec NodeSpec, index int) (*Node, error) {
	nsh, err := l.newNamespace(ctx, spec.Name)
	if err != nil {
		return nil, err
	}
	stateDir := filepath.Join(l.Dir, spec.Name)
	n := &Node{
		Namespace: nsh,
		Name:      spec.Name,
		IP:        spec.IP,
		PodCIDR:   spec.PodCIDR,
		Subnet:    spec.Subnet,
		StateDir:  stateDir,
		NetDir:    filepath.Join(stateDir, "net.d"),
		IPAMDir:   filepath.Join(stateDir, "ipam"),
		CacheDir:  filepath.Join(stateDir, "cache"),
		vpcPort:   fmt.Sprintf("n%d", index),
	}
	for _, dir := range []string{n.NetDir, n.IPAMDir, n.CacheDir} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("create state dir %s of node %s: %w", dir, n.Name, err)
		}
	}

	// Set the defaults before eth0 exists, because new interfaces copy them.
	err = n.setSysctls([][2]string{
		{"net/ipv4/ip_forward", "1"},
		{"net/ipv4/conf/all/rp_filter", "0"},
		{"net/ipv4/conf/default/rp_filter", "0"},
	})
	if err != nil {
		return nil, err
	}
	if err := l.addVeth(n.vpcPort, n.Namespace); err != nil {
		return nil, err
	}

	sn := subnets[n.Subnet]
	err = l.VPC.withHandle(func(h *netlink.Handle) error {
		port, err := h.LinkByName(n.vpcPort)
		if err != nil {
			return fmt.Errorf("find link %s in %s: %w", n.vpcPort, l.VPC, err)
		}
		br, err := h.LinkByName(sn.bridge)
		if err != nil {
			return fmt.Errorf("find bridge %s in %s: %w", sn.bridge, l.VPC, err)
		}
		if err := h.LinkSetMaster(port, br); err != nil {
			return fmt.Errorf("attach %s to %s in %s: %w", n.vpcPort, sn.bridge, l.VPC, err)
		}
		if err := h.LinkSetUp(port); err != nil {
			return fmt.Errorf("set link %s up in %s: %w", n.vpcPort, l.VPC, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := setSendRedirectsOff(l.VPC, n.vpcPort); err != nil {
		return nil, err
	}

	err = n.withHandle(func(h *netlink.Handle) error {
		if err := addAddrs(h, "eth0", netip.PrefixFrom(n.IP, sn.prefix.Bits())); err != nil {
			return err
		}
		if err := setUp(h, "eth0"); err != nil {
			return err
		}
		return addRoute(h, netip.Prefix{}, sn.gateway)
	})
	if err != nil {
		return nil, fmt.Errorf("configure eth0 of node %s: %w", n.Name, err)
	}
	l.logf("lab %s: node %s is %v on %s (%s), pods %v", l.Name, n.Name, n.IP, sn.bridge,
		n.vpcPort, n.PodCIDR)
	return n, nil
}

// addVeth creates a veth pair with one end, vpcName, in the vpc namespace and the other,
// eth0, in peer. Both ends are created in their namespaces directly, so neither appears in
// the host namespace even for a moment.
func (l *Lab) addVeth(vpcName string, peer *Namespace) error {
	peerFD, err := netns.GetFromPath(peer.NSPath)
	if err != nil {
		return fmt.Errorf("open namespace %s: %w", peer.NSPath, err)
	}
	defer peerFD.Close()
	return l.VPC.withHandle(func(h *netlink.Handle) error {
		veth := netlink.NewVeth(netlink.LinkAttrs{Name: vpcName})
		veth.PeerName = "eth0"
		veth.PeerNamespace = netlink.NsFd(int(peerFD))
		if err := h.LinkAdd(veth); err != nil {
			return fmt.Errorf("create veth %s (%s) <-> eth0 (%s): %w", vpcName, l.VPC, peer,
				err)
		}
		return nil
	})
}

// setSendRedirectsOff turns off ICMP redirects on vpc interfaces. The kernel sends a
// redirect when either the "all" or the interface value is on, so both must be off.
func setSendRedirectsOff(vpc *Namespace, links ...string) error {
	var values [][2]string
	for _, link := range links {
		values = append(values, [2]string{"net/ipv4/conf/" + link + "/send_redirects", "0"})
	}
	return vpc.setSysctls(values)
}

// AddCloudRoute adds the route "<pod CIDR of n> via <IP of n>" to the vpc router, as a cloud
// provider's route table does. Adding a route that exists already succeeds.
func (l *Lab) AddCloudRoute(n *Node) error {
	err := l.VPC.withHandle(func(h *netlink.Handle) error {
		return h.RouteReplace(cloudRoute(n))
	})
	if err != nil {
		return fmt.Errorf("add cloud route %v via %v of node %s: %w", n.PodCIDR, n.IP, n.Name,
			err)
	}
	l.logf("lab %s: cloud route %v via %v", l.Name, n.PodCIDR, n.IP)
	return nil
}

// DelCloudRoute removes the cloud route of n from the vpc router. Removing a route that
// does not exist succeeds.
func (l *Lab) DelCloudRoute(n *Node) error {
	err := l.VPC.withHandle(func(h *netlink.Handle) error {
		return h.RouteDel(cloudRoute(n))
	})
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete cloud route %v via %v of node %s: %w", n.PodCIDR, n.IP,
			n.Name, err)
	}
	return nil
}

func cloudRoute(n *Node) *netlink.Route {
	return &netlink.Route{Dst: ipNet(n.PodCIDR), Gw: net.IP(n.IP.AsSlice())}
}

func addAddrs(h *netlink.Handle, linkName string, addrs ...netip.Prefix) error {
	link, err := h.LinkByName(linkName)
	if err != nil {
		return fmt.Errorf("find link %s: %w", linkName, err)
	}
	for _, a := range addrs {
		addr := &netlink.Addr{IPNet: &net.IPNet{
			IP:   net.IP(a.Addr().AsSlice()),
			Mask: net.CIDRMask(a.Bits(), 32),
		}}
		if err := h.AddrAdd(link, addr); err != nil {
			return fmt.Errorf("add address %v to %s: %w", a, linkName, err)
		}
	}
	return nil
}

// addRoute adds a route to dst via gw. A zero dst means the default route.
func addRoute(h *netlink.Handle, dst netip.Prefix, gw netip.Addr) error {
	r := &netlink.Route{Gw: net.IP(gw.AsSlice())}
	if dst.IsValid() {
		r.Dst = ipNet(dst)
	}
	if err := h.RouteAdd(r); err != nil {
		if !dst.IsValid() {
			return fmt.Errorf("add default route via %v: %w", gw, err)
		}
		return fmt.Errorf("add route %v via %v: %w", dst, gw, err)
	}
	return nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), 32)}
}
