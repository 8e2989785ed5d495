// Package config reads and validates ferryd's YAML configuration file.
//
// Parse and Load check every setting and report all problems at once, each
// naming its field path (such as nodes[1].podCIDR), the invalid value and the
// fix. A Config that they return is complete: defaults are filled in and
// every rule holds, so callers need not check it again.
package config

import (
	"fmt"
	"net/netip"
	"os"

	"github.com/ferrynet/ferry/pkg/datapath"
)

// Defaults of optional settings.
const (
	DefaultAttachMode     = datapath.AttachAuto
	DefaultPodAttachMode  = datapath.AttachClsact
	DefaultBPFFSDir       = "/sys/fs/bpf/ferry"
	DefaultCNIConfDir     = "/etc/cni/net.d"
	DefaultCNIBinDir      = "/opt/cni/bin"
	DefaultCNIConfName    = "10-ferry.conflist"
	DefaultIPAMDataDir    = "/var/lib/cni/networks"
	DefaultMetricsAddress = "127.0.0.1:9402"
	DefaultNATTableSize   = 256 * 1024 // flows
	DefaultNATPortMin     = 32768
	DefaultNATPortMax     = 65535
)

// Limits of masquerade.natTableSize, in flows. Below the minimum a busy node
// runs out of mappings within seconds. The maximum keeps the table's two
// entries per flow, about 80 bytes each with the kernel's hash overhead,
// under about 3 GiB of locked kernel memory (an estimate).
const (
	MinNATTableSize = 1024
	MaxNATTableSize = 16 * 1024 * 1024
)

// Config is ferryd's validated configuration.
type Config struct {
	// NodeName is this node's name. Nodes contains an entry of that name.
	NodeName    string
	ClusterCIDR netip.Prefix
	// Device is the uplink interface. Empty means the interface of the IPv4
	// default route, which ferryd looks up at start.
	Device string
	// NodeIP is this node's address. The zero Addr means the first IPv4
	// address of Device, which ferryd looks up at start.
	NodeIP netip.Addr
	// AttachMode is how the uplink programs are attached: tcx, clsact, or
	// auto for tcx where the kernel has it.
	AttachMode datapath.AttachMode
	// PodAttachMode is the attachment of the pod program that the CNI
	// plugin makes: clsact or tcx. A tcx attachment waits for an RCU grace period with the RTNL
	// lock held, several milliseconds for every pod ADD, while a cls_bpf
	// filter on a new veth takes well under one. tcx needs the uplink in
	// tcx too; where AttachMode auto falls back to clsact, pods follow.
	PodAttachMode datapath.AttachMode
	// Nodes is the static node source: every node of the cluster, this one
	// included, in file order. It is empty when Kubernetes is set.
	Nodes []Node
	// Kubernetes, when set, selects the Kubernetes node source in place of
	// Nodes: ferryd watches the cluster's Node objects.
	Kubernetes *Kubernetes
	Masquerade Masquerade
	BPFFSDir   string
	CNI        CNI
	// MetricsAddress is the host:port that ferryd serves Prometheus metrics,
	// /healthz and /readyz on.
	MetricsAddress string
}

// Kubernetes configures the Kubernetes node source.
type Kubernetes struct {
	// Kubeconfig is the path of a kubeconfig file. Empty means the in-cluster
	// credentials of a pod's service account.
	Kubeconfig string
}

// Node is a cluster node of the static node source.
type Node struct {
	Name    string
	IP      netip.Addr
	PodCIDR netip.Prefix
}

// Masquerade configures the source NAT of pod traffic that leaves the cluster.
type Masquerade struct {
	Enabled bool
	// ExcludeCIDRs are destinations that are never masqueraded, in addition
	// to the cluster CIDR and the node IPs that ferryd always excludes.
	ExcludeCIDRs []netip.Prefix
	// NATTableSize is the capacity of the NAT table in flows.
	NATTableSize uint32
	// PortMin and PortMax bound the source ports that the masquerade
	// allocates, inclusive.
	PortMin, PortMax uint16
	// Timeouts are the idle times after which ferryd removes NAT flows.
	Timeouts datapath.NATTimeouts
}

// CNI configures the CNI configuration file that ferryd writes.
type CNI struct {
	ConfDir  string
	BinDir   string
	ConfName string
	// IPAMDataDir is the dataDir of the host-local IPAM plugin, where it
	// records the addresses it allocated.
	IPAMDataDir string
}

// Load reads and validates the configuration file at path. An invalid file
// yields an *Error that lists every problem.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config file: %w", err)
	}
	cfg, err := Parse(data)
	if err != nil {
		if e, ok := err.(*Error); ok {
			e.File = path
		}
		return nil, err
	}
	return cfg, nil
}

// Parse validates a configuration in YAML. Invalid input yields an *Error
// that lists every problem.
func Parse(data []byte) (*Config, error) {
	raw, problems, ok := decode(data)
	if !ok {
		return nil, &Error{Problems: problems}
	}
	cfg, more := validate(raw)
	problems = append(problems, more...)
	if len(problems) > 0 {
		return nil, &Error{Problems: problems}
	}
	return cfg, nil
}

// Self returns this node's entry of the node list. With the Kubernetes node
// source, call it only on a config that WithNodes returned.
func (c *Config) Self() Node {
	for _, n := range c.Nodes {
		if n.Name == c.NodeName {
			return n
		}
	}
	// Parse rejects a static config without an entry for NodeName, and
	// ferryd fills in the Kubernetes source's nodes with WithNodes.
	panic(fmt.Sprintf("config: node %q is not in the node list", c.NodeName))
}

// RemoteNodes returns the nodes other than this one, in file order.
func (c *Config) RemoteNodes() []Node {
	out := make([]Node, 0, len(c.Nodes))
	for _, n := range c.Nodes {
		if n.Name != c.NodeName {
			out = append(out, n)
		}
	}
	return out
}

// WithNodes returns a copy of c whose node list is nodes, which must contain
// this node. ferryd uses it to apply the nodes of the Kubernetes node source
// with the code that applies a static list.
func (c *Config) WithNodes(nodes []Node) *Config {
	out := *c
	out.Nodes = nodes
	return &out
}

// NATEntries returns the capacity of the NAT map: two entries per flow.
func (c *Config) NATEntries() uint32 { return 2 * c.Masquerade.NATTableSize }
