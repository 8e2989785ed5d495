package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
)

// StateRoot is the directory that contains one state directory per lab.
const StateRoot = "/run/ferry-lab"

const (
	netnsDir  = "/run/netns"
	bpffsRoot = "/sys/fs/bpf"
)

// Addresses that the lab topology fixes.
var (
	// DefaultClusterCIDR is the pod address range of the whole cluster.
	DefaultClusterCIDR = netip.MustParsePrefix("10.200.0.0/16")
	// OutsideHostIP is a second address of the vpc router on br0. It is a host on the
	// first node subnet that is not part of the cluster, used as a Service backend.
	OutsideHostIP = netip.MustParseAddr("10.0.1.10")
	// InternetIP is the address of the ext namespace, a host on the internet.
	InternetIP = netip.MustParseAddr("203.0.113.10")
	// ServiceVIP is the cluster IP and port of the "kubernetes" Service in the checks.
	ServiceVIP = netip.MustParseAddrPort("10.32.0.1:443")
	// ServiceBackend is the endpoint behind ServiceVIP: a listener in the vpc namespace.
	ServiceBackend = netip.AddrPortFrom(OutsideHostIP, 6443)
)

// subnet is one L2 segment of node addresses, a bridge in the vpc namespace.
type subnet struct {
	bridge  string
	prefix  netip.Prefix
	gateway netip.Addr
}

var subnets = []subnet{
	{"br0", netip.MustParsePrefix("10.0.1.0/24"), netip.MustParseAddr("10.0.1.1")},
	{"br1", netip.MustParsePrefix("10.0.2.0/24"), netip.MustParseAddr("10.0.2.1")},
}

// Addresses of the link between the vpc router and the ext namespace.
var (
	vpcExtIP  = netip.MustParsePrefix("198.51.100.1/24")
	extLinkIP = netip.MustParsePrefix("198.51.100.2/24")
	extHostIP = netip.PrefixFrom(InternetIP, 24)
	internet  = netip.MustParsePrefix("203.0.113.0/24")
)

// NodeSpec describes one node of a lab.
type NodeSpec struct {
	// Name is the Kubernetes node name, for example "worker-0". It becomes part of the
	// namespace name, so it may contain only lowercase letters, digits and '-'.
	Name string
	// IP is the node address on eth0, inside the subnet that Subnet selects.
	IP netip.Addr
	// PodCIDR is the pod address range of the node.
	PodCIDR netip.Prefix
	// Subnet selects the node segment: 0 is 10.0.1.0/24 on br0, 1 is 10.0.2.0/24 on br1.
	Subnet int
}

// Options configures New.
type Options struct {
	// Nodes lists the node namespaces to create.
	Nodes []NodeSpec
	// CNIBinDirs lists the directories that contain CNI plugin executables, searched in
	// order. The default is /usr/lib/cni.
	CNIBinDirs []string
	// Detached marks the lab to outlive its owner: New in other processes leaves it alone
	// even after the owner exits, and only Remove or Clean deletes it.
	Detached bool
	// Logf, when set, receives one line for each setup and teardown step.
	Logf func(format string, args ...any)
}

// Lab is one running lab: the vpc and ext namespaces, the nodes and their pods.
type Lab struct {
	// Name is the random prefix of every namespace of the lab, for example "fl3a9c".
	Name string
	// Dir is the state directory of the lab, StateRoot/<Name>.
	Dir string
	// VPC is the router namespace that connects the node subnets and ext.
	VPC *Namespace
	// Ext is the namespace that represents the internet.
	Ext *Namespace
	// Nodes lists the nodes in the order of Options.Nodes.
	Nodes []*Node

	binDirs []string
	logf    func(format string, args ...any)

	mu        sync.Mutex
	closed    bool
	pods      map[string]*Pod
	processes []*Process
	reporters []*PeerReporter
	logSeq    int
}

// labNamePattern matches the names that randomName makes.
var labNamePattern = regexp.MustCompile(`^fl[0-9a-f]{4}$`)

var namePattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$`)

// reservedNames are namespace suffixes that the lab uses itself.
var reservedNames = []string{"vpc", "ext"}

// New builds a lab. It first tears down labs left by processes that died, then creates the
// vpc and ext namespaces and one namespace per node. On error it removes what it created.
func New(ctx context.Context, opts Options) (*Lab, error) {
	if err := validateNodes(opts.Nodes); err != nil {
		return nil, err
	}
	l := &Lab{
		binDirs: opts.CNIBinDirs,
		logf:    opts.Logf,
		pods:    map[string]*Pod{},
	}
	if len(l.binDirs) == 0 {
		l.binDirs = []string{"/usr/lib/cni"}
	}
	if l.logf == nil {
		l.logf = func(string, ...any) {}
	}

	if _, err := reapStale(false, l.logf); err != nil {
		return nil, err
	}
	if err := l.createStateDir(opts.Detached); err != nil {
		return nil, err
	}
	l.logf("lab %s: state in %s", l.Name, l.Dir)

	if err := l.build(ctx, opts.Nodes); err != nil {
		if closeErr := l.Close(); closeErr != nil {
			err = errors.Join(err, closeErr)
		}
		return nil, err
	}
	return l, nil
}

func (l *Lab) build(ctx context.Context, specs []NodeSpec) error {
	var err error
	if l.VPC, err = l.newNamespace(ctx, "vpc"); err != nil {
		return err
	}
	if err := l.setupVPC(ctx); err != nil {
		return err
	}
	if l.Ext, err = l.newNamespace(ctx, "ext"); err != nil {
		return err
	}
	if err := l.setupExt(); err != nil {
		return err
	}
	for i, spec := range specs {
		n, err := l.addNode(ctx, spec, i)
		if err != nil {
			return err
		}
		l.Nodes = append(l.Nodes, n)
	}
	return nil
}

func validateNodes(specs []NodeSpec) error {
	names := map[string]bool{}
	ips := map[netip.Addr]bool{}
	for _, s := range specs {
		if !namePattern.MatchString(s.Name) || slices.Contains(reservedNames, s.Name) {
			return fmt.Errorf("invalid node name %q: use up to 32 lowercase letters, digits "+
				"and '-', other than %v", s.Name, reservedNames)
		}
		if names[s.Name] {
			return fmt.Errorf("duplicate node name %q: give each node its own name", s.Name)
		}
		names[s.Name] = true
		if s.Subnet < 0 || s.Subnet >= len(subnets) {
			return fmt.Errorf("invalid subnet %d of node %s: use 0 (%s) or 1 (%s)",
				s.Subnet, s.Name, subnets[0].prefix, subnets[1].prefix)
		}
		sn := subnets[s.Subnet]
		if !sn.prefix.Contains(s.IP) || s.IP == sn.gateway || s.IP == OutsideHostIP ||
			s.IP == sn.prefix.Addr() || s.IP == lastAddr(sn.prefix) {
			return fmt.Errorf("invalid IP %v of node %s: use a host address of %s other "+
				"than %v and %v", s.IP, s.Name, sn.prefix, sn.gateway, OutsideHostIP)
		}
		if ips[s.IP] {
			return fmt.Errorf("duplicate node IP %v of node %s: give each node its own IP",
				s.IP, s.Name)
		}
		ips[s.IP] = true
		if !s.PodCIDR.IsValid() || !s.PodCIDR.Addr().Is4() || s.PodCIDR.Masked() != s.PodCIDR {
			return fmt.Errorf("invalid pod CIDR %v of node %s: use an IPv4 network address "+
				"with its prefix length, such as 10.200.0.0/24", s.PodCIDR, s.Name)
		}
	}
	for i, a := range specs {
		for _, b := range specs[i+1:] {
			if a.PodCIDR.Overlaps(b.PodCIDR) {
				return fmt.Errorf("pod CIDR %v of node %s overlaps %v of node %s: give each "+
					"node its own range", a.PodCIDR, a.Name, b.PodCIDR, b.Name)
			}
		}
	}
	return nil
}

// lastAddr returns the broadcast address of an IPv4 prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	for bit := p.Bits(); bit < 32; bit++ {
		a[bit/8] |= 0x80 >> (bit % 8)
	}
	return netip.AddrFrom4(a)
}

// createStateDir picks a lab name that no state directory or namespace uses yet and creates
// StateRoot/<name> with the owner's pid file.
func (l *Lab) createStateDir(detached bool) error {
	if err := os.MkdirAll(StateRoot, 0o755); err != nil {
		return fmt.Errorf("create lab state root %s: %w", StateRoot, err)
	}
	for range 20 {
		name, err := randomName()
		if err != nil {
			return err
		}
		dir := filepath.Join(StateRoot, name)
		if len(namespacesOf(name)) > 0 {
			continue
		}
		if err := os.Mkdir(dir, 0o755); errors.Is(err, os.ErrExist) {
			continue
		} else if err != nil {
			return fmt.Errorf("create lab state dir %s: %w", dir, err)
		}
		l.Name, l.Dir = name, dir
		if detached {
			if err := os.WriteFile(filepath.Join(dir, detachedFile), nil, 0o644); err != nil {
				return fmt.Errorf("mark lab %s as detached: %w", name, err)
			}
		}
		return writeOwner(dir)
	}
	return fmt.Errorf("pick lab name: 20 random names were taken; run 'ferrylab clean'")
}

func randomName() (string, error) {
	b := make([]byte, 2)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("read random lab name: %w", err)
	}
	return "fl" + hex.EncodeToString(b), nil
}

// Node returns the node with the given name, or nil.
func (l *Lab) Node(name string) *Node {
	for _, n := range l.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// Pod returns the pod with the given name, or nil.
func (l *Lab) Pod(name string) *Pod {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.pods[name]
}

// Pods returns the pods of all nodes, sorted by name.
func (l *Lab) Pods() []*Pod {
	l.mu.Lock()
	defer l.mu.Unlock()
	pods := make([]*Pod, 0, len(l.pods))
	for _, p := range l.pods {
		if p != nil { // a nil entry reserves the name of a pod that AddPod is creating
			pods = append(pods, p)
		}
	}
	slices.SortFunc(pods, func(a, b *Pod) int { return strings.Compare(a.Name, b.Name) })
	return pods
}

// Close stops the processes that the lab started, closes its peer reporters, kills any other
// process left in its namespaces, and deletes the namespaces, the bpffs directories of its
// nodes and its state directory. It runs once, and later calls return nil.
//
// NOTE: Close runs no CNI DEL for the pods that remain. Deleting the namespaces and state
// directories removes what plugins created inside them, but not state that a plugin keeps
// elsewhere on the host.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	processes := l.processes
	reporters := l.reporters
	l.mu.Unlock()

	for _, p := range processes {
		if err := p.Stop(); err != nil {
			l.logf("lab %s: stop %s: %v", l.Name, p, err)
		}
	}
	for _, r := range reporters {
		r.Close()
	}
	if l.Name == "" {
		return nil
	}
	err := teardown(l.Name, l.logf)
	if err == nil {
		l.logf("lab %s: removed", l.Name)
	}
	return err
}

// Namespaces returns the namespaces of the lab: vpc, ext, the nodes, then the pods.
func (l *Lab) Namespaces() []*Namespace {
	var all []*Namespace
	if l.VPC != nil {
		all = append(all, l.VPC)
	}
	if l.Ext != nil {
		all = append(all, l.Ext)
	}
	for _, n := range l.Nodes {
		all = append(all, n.Namespace)
	}
	for _, p := range l.Pods() {
		all = append(all, p.Namespace)
	}
	return all
}

func (l *Lab) errIfClosed() error {
	if l.closed {
		return fmt.Errorf("use lab %s: the lab is closed; create a new one with New", l.Name)
	}
	return nil
}
