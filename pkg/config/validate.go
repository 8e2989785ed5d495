package config

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/ferrynet/ferry/pkg/datapath"
)

// maxPodCIDRBits is the longest pod CIDR prefix: host-local needs room for
// the network address, the gateway, one pod and the broadcast address.
const maxPodCIDRBits = 30

// validate checks raw and fills in defaults. It returns every problem it finds.
func validate(raw fileConfig) (*Config, []Problem) {
	var ps problems
	cfg := &Config{
		NodeName:       raw.NodeName,
		Device:         raw.Device,
		MetricsAddress: raw.MetricsAddress,
	}

	validateNodeName(&ps, "nodeName", raw.NodeName)
	cfg.ClusterCIDR = parseNetwork(&ps, "clusterCIDR", raw.ClusterCIDR, "10.200.0.0/16", true)
	if raw.Device != "" {
		validateDevice(&ps, "device", raw.Device)
	}
	if raw.NodeIP != "" {
		cfg.NodeIP = parseNodeAddr(&ps, "nodeIP", raw.NodeIP, cfg.ClusterCIDR)
	}

	cfg.AttachMode = DefaultAttachMode
	if raw.AttachMode != "" {
		mode, err := datapath.ParseAttachMode(raw.AttachMode)
		if err != nil {
			ps.add("attachMode", "invalid mode %q: use auto, tcx or clsact", raw.AttachMode)
		}
		cfg.AttachMode = mode
	}
	cfg.PodAttachMode = DefaultPodAttachMode
	switch mode := datapath.AttachMode(raw.PodAttachMode); mode {
	case "":
	case datapath.AttachClsact, datapath.AttachTCX:
		cfg.PodAttachMode = mode
		if mode == datapath.AttachTCX && cfg.AttachMode == datapath.AttachClsact {
			ps.add("podAttachMode", "tcx for pods needs tcx on the uplink, and attachMode "+
				"is clsact: set attachMode to auto or tcx, or podAttachMode to clsact")
		}
	default:
		ps.add("podAttachMode", "invalid mode %q: use clsact or tcx", raw.PodAttachMode)
	}

	if raw.Kubernetes != nil {
		cfg.Kubernetes = validateKubernetes(&ps, raw)
	} else {
		cfg.Nodes = validateNodes(&ps, raw, cfg.ClusterCIDR, cfg.NodeIP)
	}
	cfg.Masquerade = validateMasquerade(&ps, raw.Masquerade)

	cfg.BPFFSDir = absPath(&ps, "bpffsDir", raw.BPFFSDir, DefaultBPFFSDir)
	cfg.CNI = CNI{
		ConfDir:     absPath(&ps, "cni.confDir", raw.CNI.ConfDir, DefaultCNIConfDir),
		BinDir:      absPath(&ps, "cni.binDir", raw.CNI.BinDir, DefaultCNIBinDir),
		ConfName:    DefaultCNIConfName,
		IPAMDataDir: absPath(&ps, "cni.ipamDataDir", raw.CNI.IPAMDataDir, DefaultIPAMDataDir),
	}
	if raw.CNI.ConfName != "" {
		validateConfName(&ps, "cni.confName", raw.CNI.ConfName)
		cfg.CNI.ConfName = raw.CNI.ConfName
	}

	if cfg.MetricsAddress == "" {
		cfg.MetricsAddress = DefaultMetricsAddress
	} else {
		validateListenAddress(&ps, "metricsAddress", cfg.MetricsAddress)
	}
	return cfg, ps
}

// validateNodes checks the node list and this node's place in it.
// nodeIP is the parsed top-level nodeIP, the zero Addr when unset or invalid.
func validateNodes(ps *problems, raw fileConfig, cluster netip.Prefix, nodeIP netip.Addr) []Node {
	if len(raw.Nodes) == 0 && raw.kubernetesNull {
		ps.add("kubernetes", "empty, which YAML reads as no section, and nodes is missing: "+
			"write kubernetes: {} for the in-cluster credentials of a pod, or "+
			"kubernetes: {kubeconfig: FILE}")
		return nil
	}
	if len(raw.Nodes) == 0 {
		ps.add("nodes", "missing: list every node of the cluster, this one included, "+
			"each with name, ip and podCIDR, or add a kubernetes section to watch the "+
			"cluster's Node objects (kubernetes: {} for in-cluster credentials)")
		return nil
	}

	nodes := make([]Node, len(raw.Nodes))
	names := map[string]int{}
	ips := map[netip.Addr]int{}
	inCluster := make([]bool, len(raw.Nodes))
	for i, rn := range raw.Nodes {
		field := fmt.Sprintf("nodes[%d]", i)
		n := Node{Name: rn.Name}
		validateNodeName(ps, field+".name", rn.Name)
		if j, dup := names[rn.Name]; dup && rn.Name != "" {
			ps.add(field+".name", "duplicate node name %q, also nodes[%d].name: "+
				"give every node its own name", rn.Name, j)
		} else {
			names[rn.Name] = i
		}

		n.IP = parseNodeAddr(ps, field+".ip", rn.IP, cluster)
		if j, dup := ips[n.IP]; dup && n.IP.IsValid() {
			ps.add(field+".ip", "duplicate node IP %s, also nodes[%d].ip: "+
				"give every node its own address", n.IP, j)
		} else if n.IP.IsValid() {
			ips[n.IP] = i
		}

		n.PodCIDR = parseNetwork(ps, field+".podCIDR", rn.PodCIDR, "10.200.1.0/24", true)
		if !validatePodCIDR(ps, field+".podCIDR", n.PodCIDR, cluster) {
			// A range outside the cluster is reported once, not again as an overlap.
			nodes[i] = n
			continue
		}
		inCluster[i] = true
		for j := range i {
			other := nodes[j].PodCIDR
			if inCluster[j] && n.PodCIDR.Overlaps(other) {
				ps.add(field+".podCIDR", "%s overlaps nodes[%d].podCIDR %s: "+
					"give every node a separate range", n.PodCIDR, j, other)
			}
		}
		nodes[i] = n
	}

	if raw.NodeName == "" || !isNodeName(raw.NodeName) {
		return nodes
	}
	self, ok := names[raw.NodeName]
	if !ok {
		ps.add("nodeName", "node %q is not listed under nodes: add an entry "+
			"{name: %s, ip: <node IP>, podCIDR: <its pod range>}", raw.NodeName, raw.NodeName)
		return nodes
	}
	if nodeIP.IsValid() && nodes[self].IP.IsValid() && nodeIP != nodes[self].IP {
		ps.add("nodeIP", "%s differs from nodes[%d].ip %s of node %q: make them equal, "+
			"or remove nodeIP to use the first address of the device",
			nodeIP, self, nodes[self].IP, raw.NodeName)
	}
	return nodes
}

// validateKubernetes checks the Kubernetes node source, which replaces the
// static node list.
func validateKubernetes(ps *problems, raw fileConfig) *Kubernetes {
	if len(raw.Nodes) > 0 {
		ps.add("nodes", "set together with kubernetes, but ferryd takes the nodes from one "+
			"source: remove nodes to use the cluster's Node objects, or remove kubernetes "+
			"to use the static list")
	}
	k := &Kubernetes{}
	if raw.Kubernetes.Kubeconfig != "" {
		k.Kubeconfig = absPath(ps, "kubernetes.kubeconfig", raw.Kubernetes.Kubeconfig,
			"/var/lib/ferry/kubeconfig")
	}
	return k
}

// validatePodCIDR reports whether pod is a valid range inside cluster.
func validatePodCIDR(ps *problems, field string, pod, cluster netip.Prefix) bool {
	if !pod.IsValid() || !cluster.IsValid() {
		return false
	}
	if pod.Bits() < cluster.Bits() || !cluster.Contains(pod.Addr()) {
		ps.add(field, "%s is outside clusterCIDR %s: choose a range inside it", pod, cluster)
		return false
	}
	if pod.Bits() > maxPodCIDRBits {
		ps.add(field, "%s is too small for pods: use a prefix of /%d or shorter",
			pod, maxPodCIDRBits)
		return false
	}
	return true
}

func validateMasquerade(ps *problems, raw fileMasquerade) Masquerade {
	m := Masquerade{
		Enabled:      true,
		NATTableSize: DefaultNATTableSize,
		PortMin:      DefaultNATPortMin,
		PortMax:      DefaultNATPortMax,
	}
	if raw.Enabled != nil {
		m.Enabled = *raw.Enabled
	}
	for i, s := range raw.ExcludeCIDRs {
		field := fmt.Sprintf("masquerade.excludeCIDRs[%d]", i)
		if p := parseNetwork(ps, field, s, "192.168.0.0/16", true); p.IsValid() {
			m.ExcludeCIDRs = append(m.ExcludeCIDRs, p)
		}
	}
	if raw.NATTableSize != nil {
		size := *raw.NATTableSize
		if size < MinNATTableSize || size > MaxNATTableSize {
			ps.add("masquerade.natTableSize", "invalid size %d: use a number of flows "+
				"from %d to %d, such as the default %d",
				size, MinNATTableSize, MaxNATTableSize, DefaultNATTableSize)
		} else {
			m.NATTableSize = uint32(size)
		}
	}
	if raw.PortRange != "" {
		m.PortMin, m.PortMax = parsePortRange(ps, "masquerade.portRange", raw.PortRange)
	}
	m.Timeouts = validateNATTimeouts(ps, raw.Timeouts)
	return m
}

// parsePortRange parses MIN-MAX. On a problem it returns the default range,
// which the caller discards with the rest of the config.
func parsePortRange(ps *problems, field, s string) (uint16, uint16) {
	const hint = "write MIN-MAX with 1 <= MIN <= MAX <= 65535, such as 32768-65535"
	lo, hi, found := strings.Cut(s, "-")
	if !found {
		ps.add(field, "invalid port range %q: %s", s, hint)
		return DefaultNATPortMin, DefaultNATPortMax
	}
	first, errFirst := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
	last, errLast := strconv.ParseUint(strings.TrimSpace(hi), 10, 16)
	if errFirst != nil || errLast != nil || first < 1 || first > last {
		ps.add(field, "invalid port range %q: %s", s, hint)
		return DefaultNATPortMin, DefaultNATPortMax
	}
	return uint16(first), uint16(last)
}

// parseNetwork parses an IPv4 network address in CIDR notation. An empty
// value is a problem when required, and yields the zero Prefix otherwise.
func parseNetwork(ps *problems, field, s, example string, required bool) netip.Prefix {
	if s == "" {
		if required {
			ps.add(field, "missing: set an IPv4 network such as %s", example)
		}
		return netip.Prefix{}
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		ps.add(field, "invalid CIDR %q: write an IPv4 network such as %s", s, example)
		return netip.Prefix{}
	}
	if !p.Addr().Is4() {
		ps.add(field, "%q is not an IPv4 network: ferry supports IPv4 only, "+
			"use an IPv4 network such as %s", s, example)
		return netip.Prefix{}
	}
	if p.Masked() != p {
		ps.add(field, "%q has host bits set: use the network address %s", s, p.Masked())
		return netip.Prefix{}
	}
	return p
}

// parseNodeAddr parses a node's IPv4 address, which must be unicast and
// outside the pod addresses.
func parseNodeAddr(ps *problems, field, s string, cluster netip.Prefix) netip.Addr {
	if s == "" {
		ps.add(field, "missing: set the node's IPv4 address, such as 10.0.1.20")
		return netip.Addr{}
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		ps.add(field, "invalid IP address %q: write an IPv4 address such as 10.0.1.20", s)
		return netip.Addr{}
	}
	if !a.Is4() {
		ps.add(field, "%q is not an IPv4 address: ferry supports IPv4 only, "+
			"use the node's IPv4 address", s)
		return netip.Addr{}
	}
	if !a.IsGlobalUnicast() {
		ps.add(field, "%s is not a unicast address: use the node's own IPv4 address", s)
		return netip.Addr{}
	}
	if cluster.IsValid() && cluster.Contains(a) {
		ps.add(field, "%s is inside clusterCIDR %s: node addresses must lie outside "+
			"the pod addresses", s, cluster)
		return netip.Addr{}
	}
	return a
}

// validateNodeName checks a Kubernetes node name: a DNS subdomain of
// RFC 1123, lowercase letters, digits, '-' and '.', at most 253 characters.
func validateNodeName(ps *problems, field, name string) {
	const hint = "use lowercase letters, digits, '-' and '.', starting and ending " +
		"with a letter or digit, such as worker-0"
	if name == "" {
		ps.add(field, "missing: set the node name, such as worker-0")
		return
	}
	if len(name) > 253 {
		ps.add(field, "invalid node name of %d characters: use at most 253", len(name))
		return
	}
	if !isNodeName(name) {
		ps.add(field, "invalid node name %q: %s", name, hint)
	}
}

func isNodeName(name string) bool {
	if len(name) > 253 {
		return false
	}
	for _, label := range strings.Split(name, ".") {
		if !isDNSLabel(label) {
			return false
		}
	}
	return true
}

func isDNSLabel(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// validateDevice checks an interface name by the kernel's rules: at most 15
// bytes, not "." or "..", and no '/', ':' or white space.
func validateDevice(ps *problems, field, name string) {
	if len(name) > 15 || name == "." || name == ".." ||
		strings.ContainsFunc(name, func(r rune) bool {
			return r == '/' || r == ':' || r <= ' ' || r == 0x7f
		}) {
		ps.add(field, "invalid interface name %q: use the name of the node's uplink, "+
			"such as eth0, or remove device to use the default route's interface", name)
	}
}

// absPath returns the cleaned absolute path s, or def when s is empty.
func absPath(ps *problems, field, s, def string) string {
	if s == "" {
		return def
	}
	if strings.ContainsRune(s, 0) {
		ps.add(field, "invalid path %q: remove the NUL byte", s)
		return def
	}
	if !filepath.IsAbs(s) {
		ps.add(field, "%q is not an absolute path: use one such as %s", s, def)
		return def
	}
	return filepath.Clean(s)
}

// validateConfName checks the CNI configuration file name. Runtimes read a
// configuration list only from a file named *.conflist.
func validateConfName(ps *problems, field, name string) {
	if strings.ContainsAny(name, "/\x00") || !strings.HasSuffix(name, ".conflist") ||
		name == ".conflist" {
		ps.add(field, "invalid file name %q: use a plain file name ending in .conflist, "+
			"such as %s", name, DefaultCNIConfName)
	}
}

// validateListenAddress checks a host:port address to listen on.
func validateListenAddress(ps *problems, field, addr string) {
	const hint = "write HOST:PORT, such as 127.0.0.1:9402"
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		ps.add(field, "invalid address %q: %s", addr, hint)
		return
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		ps.add(field, "invalid port %q in %q: use a port from 1 to 65535", port, addr)
	}
	if host == "" || host == "localhost" {
		return
	}
	if _, err := netip.ParseAddr(host); err != nil {
		ps.add(field, "invalid host %q in %q: use an IP address, localhost, "+
			"or nothing for every address", host, addr)
	}
}
