package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
)

// Dataplane is one way to give the nodes of a lab pod networking. The demo and the checks
// take a Dataplane, so that a new dataplane needs only its own setup and conflist.
type Dataplane struct {
	// Name is a short name, such as "baseline".
	Name string
	// Setup prepares all nodes of the lab and the vpc router before the first pod is added.
	Setup func(ctx context.Context, l *Lab) error
	// Conflist returns the CNI configuration list for pods on node n.
	Conflist func(n *Node) ([]byte, error)
	// CNIBinDirs lists directories with the dataplane's own CNI plugins. Callers put them
	// before /usr/lib/cni in Options.CNIBinDirs.
	CNIBinDirs []string
	// Describe, when set, prints the dataplane's own view of a node after the checks.
	Describe func(ctx context.Context, l *Lab, w io.Writer)
}

// baselineConflistFile is the name of the file that SetupBaseline writes into net.d.
const baselineConflistFile = "10-baseline.conflist"

// Baseline returns the hand-wired setup that ferry replaces. Each node runs the CNI bridge
// plugin with host-local IPAM, a MASQUERADE rule for traffic that leaves the cluster and an
// iptables DNAT rule for the "kubernetes" Service (ServiceVIP to ServiceBackend). The vpc
// router has static routes for the pod ranges.
func Baseline(clusterCIDR netip.Prefix) Dataplane {
	return Dataplane{
		Name: "baseline",
		Setup: func(ctx context.Context, l *Lab) error {
			return l.SetupBaseline(ctx, clusterCIDR)
		},
		Conflist: func(n *Node) ([]byte, error) { return n.BaselineConflist(), nil },
	}
}

// SetupBaseline sets up every node with Node.SetupBaseline, adds the Service DNAT for
// ServiceVIP to each node and adds a cloud route for each node to the vpc router.
func (l *Lab) SetupBaseline(ctx context.Context, clusterCIDR netip.Prefix) error {
	for _, n := range l.Nodes {
		if err := n.SetupBaseline(ctx, clusterCIDR); err != nil {
			return err
		}
		if err := n.AddServiceDNAT(ctx, ServiceVIP, ServiceBackend); err != nil {
			return err
		}
		if err := l.AddCloudRoute(n); err != nil {
			return err
		}
	}
	return nil
}

// BaselineConflist returns the baseline CNI configuration list for pods on n. The bridge
// plugin makes cni0 the pods' gateway and does not masquerade. Its host-local IPAM hands
// out the node's pod CIDR with a default route, and the loopback plugin follows.
func (n *Node) BaselineConflist() []byte {
	conflist := map[string]any{
		"cniVersion": "1.0.0",
		"name":       "baseline",
		"plugins": []any{
			map[string]any{
				"type":      "bridge",
				"bridge":    "cni0",
				"isGateway": true,
				"ipMasq":    false,
				"ipam": map[string]any{
					"type":    "host-local",
					"ranges":  [][]map[string]string{{{"subnet": n.PodCIDR.String()}}},
					"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
					"dataDir": n.IPAMDir,
				},
			},
			map[string]any{"type": "loopback"},
		},
	}
	data, err := json.MarshalIndent(conflist, "", "  ")
	if err != nil {
		panic(fmt.Sprintf("encode baseline conflist: %v", err)) // maps of strings always encode
	}
	return data
}

// SetupBaseline writes the baseline conflist into n.NetDir and adds the rule that
// masquerades traffic from the node's pods to destinations outside clusterCIDR. Running it
// twice adds the rule once.
func (n *Node) SetupBaseline(ctx context.Context, clusterCIDR netip.Prefix) error {
	path := filepath.Join(n.NetDir, baselineConflistFile)
	if err := os.WriteFile(path, n.BaselineConflist(), 0o644); err != nil {
		return fmt.Errorf("write baseline conflist %s: %w", path, err)
	}
	err := n.ensureRule(ctx, "nat", "POSTROUTING", "-s", n.PodCIDR.String(),
		"!", "-d", clusterCIDR.String(), "-j", "MASQUERADE")
	if err != nil {
		return fmt.Errorf("add masquerade rule on node %s: %w", n.Name, err)
	}
	return nil
}

// AddServiceDNAT installs a kube-proxy style TCP Service on the node: connections to vip,
// from pods (nat PREROUTING) and from the node itself (nat OUTPUT), go to one of backends,
// picked at random with equal chances. Calling it again for the same vip replaces the
// backends.
func (n *Node) AddServiceDNAT(ctx context.Context, vip netip.AddrPort,
	backends ...netip.AddrPort) error {
	if !vip.Addr().Is4() {
		return fmt.Errorf("add service %v on node %s: invalid VIP, use an IPv4 address and "+
			"port", vip, n.Name)
	}
	if len(backends) == 0 {
		return fmt.Errorf("add service %v on node %s: missing backends, give at least one",
			vip, n.Name)
	}
	chain := serviceChain(vip)
	if _, err := n.iptables(ctx, "-t", "nat", "-N", chain); err != nil {
		// The chain exists from an earlier call: empty it to replace the backends.
		if _, flushErr := n.iptables(ctx, "-t", "nat", "-F", chain); flushErr != nil {
			return fmt.Errorf("add service %v on node %s: %w", vip, n.Name, err)
		}
	}
	for _, rule := range serviceRules(chain, backends) {
		if _, err := n.iptables(ctx, append([]string{"-t", "nat"}, rule...)...); err != nil {
			return fmt.Errorf("add service %v on node %s: %w", vip, n.Name, err)
		}
	}
	for _, hook := range []string{"PREROUTING", "OUTPUT"} {
		if err := n.ensureRule(ctx, "nat", hook, serviceMatch(vip, chain)...); err != nil {
			return fmt.Errorf("add service %v on node %s: %w", vip, n.Name, err)
		}
	}
	n.lab.logf("lab %s: node %s: service %v -> %v", n.lab.Name, n.Name, vip, backends)
	return nil
}

// DelServiceDNAT removes the rules that AddServiceDNAT installed for vip.
func (n *Node) DelServiceDNAT(ctx context.Context, vip netip.AddrPort) error {
	chain := serviceChain(vip)
	for _, hook := range []string{"PREROUTING", "OUTPUT"} {
		args := append([]string{"-t", "nat", "-D", hook}, serviceMatch(vip, chain)...)
		if _, err := n.iptables(ctx, args...); err != nil {
			return fmt.Errorf("delete service %v on node %s: %w", vip, n.Name, err)
		}
	}
	for _, op := range []string{"-F", "-X"} {
		if _, err := n.iptables(ctx, "-t", "nat", op, chain); err != nil {
			return fmt.Errorf("delete service %v on node %s: %w", vip, n.Name, err)
		}
	}
	return nil
}

// serviceChain returns the nat chain name of a Service, such as LAB-SVC-0A200001-443.
func serviceChain(vip netip.AddrPort) string {
	a := vip.Addr().As4()
	return fmt.Sprintf("LAB-SVC-%02X%02X%02X%02X-%d", a[0], a[1], a[2], a[3], vip.Port())
}

func serviceMatch(vip netip.AddrPort, chain string) []string {
	return []string{"-d", vip.Addr().String() + "/32", "-p", "tcp",
		"--dport", strconv.Itoa(int(vip.Port())), "-j", chain}
}

// serviceRules returns the rules of a Service chain. Rule i of n matches with probability
// 1/(n-i), so that each backend gets 1/n of the connections, and the last rule matches all
// connections that remain.
func serviceRules(chain string, backends []netip.AddrPort) [][]string {
	var rules [][]string
	for i, b := range backends {
		rule := []string{"-A", chain, "-p", "tcp"}
		if remaining := len(backends) - i; remaining > 1 {
			rule = append(rule, "-m", "statistic", "--mode", "random",
				"--probability", fmt.Sprintf("%.10f", 1/float64(remaining)))
		}
		rules = append(rules, append(rule, "-j", "DNAT", "--to-destination", b.String()))
	}
	return rules
}

// iptables runs iptables inside the node namespace, waiting up to 5 seconds for the
// xtables lock that all namespaces share.
func (n *Node) iptables(ctx context.Context, args ...string) (string, error) {
	return n.Run(ctx, append([]string{"iptables", "-w", "5"}, args...)...)
}

// ensureRule appends a rule to a chain unless the chain has it already.
func (n *Node) ensureRule(ctx context.Context, table, chain string, rule ...string) error {
	check := append([]string{"-t", table, "-C", chain}, rule...)
	if _, err := n.iptables(ctx, check...); err == nil {
		return nil
	}
	_, err := n.iptables(ctx, append([]string{"-t", table, "-A", chain}, rule...)...)
	return err
}
