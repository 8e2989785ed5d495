package lab

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"
)

// Nodes, pods and ports that the checks use.
const (
	checkPodPort      = 7000 // peer reporter in every check pod
	checkInternetPort = 80   // peer reporters in ext on InternetIP
	// sameSubnetTTL is the TTL of a ping reply between pods on two nodes of one subnet: each
	// node forwards once, and the vpc router does not count.
	sameSubnetTTL = 62
	// crossSubnetTTL is sameSubnetTTL with the vpc router as one more hop.
	crossSubnetTTL = 61
)

// CheckNodes returns the nodes that RunChecks expects: worker-0 and worker-1 on the first
// subnet and worker-2 on the second, with pod CIDRs inside DefaultClusterCIDR.
func CheckNodes() []NodeSpec {
	return []NodeSpec{
		{Name: "worker-0", IP: netip.MustParseAddr("10.0.1.20"),
			PodCIDR: netip.MustParsePrefix("10.200.0.0/24"), Subnet: 0},
		{Name: "worker-1", IP: netip.MustParseAddr("10.0.1.21"),
			PodCIDR: netip.MustParsePrefix("10.200.1.0/24"), Subnet: 0},
		{Name: "worker-2", IP: netip.MustParseAddr("10.0.2.20"),
			PodCIDR: netip.MustParsePrefix("10.200.2.0/24"), Subnet: 1},
	}
}

// checkPods maps the pods of the checks to their nodes.
var checkPods = []struct{ pod, node string }{
	{"pod-a", "worker-0"},
	{"pod-b", "worker-1"},
	{"pod-c", "worker-2"},
}

// CheckEnv configures RunChecks.
type CheckEnv struct {
	// Conflist returns the CNI configuration list for pods on a node. When nil, pods use
	// the first configuration file in the node's net.d, as a container runtime does.
	Conflist func(n *Node) ([]byte, error)
}

// CheckResult is the outcome of one check.
type CheckResult struct {
	// Name describes what the check tests, such as "pod-a pings pod-b".
	Name string
	// Passed is true when Problems is empty.
	Passed bool
	// Detail is the evidence for a reader: commands with their output, addresses seen.
	Detail string
	// Problems lists each expectation that failed, one sentence each.
	Problems []string
}

// RunChecks runs the seven dataplane checks on a lab built from CheckNodes whose dataplane
// is set up, and writes each result to w (if not nil) as it completes. It adds the pods
// pod-a, pod-b and pod-c when the lab has no pods of these names, and starts peer reporters
// in the vpc and ext namespaces that it closes before it returns.
func RunChecks(ctx context.Context, l *Lab, env CheckEnv, w io.Writer) []CheckResult {
	c := &checker{ctx: ctx, lab: l, env: env}
	defer c.closeReporters()

	checks := []func(*checkResultBuilder){
		c.checkPodAddresses,
		c.checkPodPing,
		c.checkPodSources,
		c.checkService,
		c.checkPodInternet,
		c.checkNodeReach,
		c.checkSecondSubnet,
	}
	var results []CheckResult
	for i, check := range checks {
		b := &checkResultBuilder{}
		check(b)
		r := b.result()
		results = append(results, r)
		if w != nil {
			writeResult(w, i+1, r)
		}
	}
	if w != nil {
		passed := 0
		for _, r := range results {
			if r.Passed {
				passed++
			}
		}
		fmt.Fprintf(w, "checks: %d passed, %d failed\n", passed, len(results)-passed)
	}
	return results
}

// AddCheckPods adds the pods that RunChecks uses (pod-a on worker-0, pod-b on worker-1,
// pod-c on worker-2) unless the lab has them already, and returns them in that order.
func AddCheckPods(ctx context.Context, l *Lab, env CheckEnv) ([]*Pod, error) {
	c := &checker{ctx: ctx, lab: l, env: env}
	var pods []*Pod
	for _, cp := range checkPods {
		p, err := c.pod(cp.pod)
		if err != nil {
			return pods, err
		}
		pods = append(pods, p)
	}
	return pods, nil
}

// writeResult prints one result: a PASS or FAIL line, the indented detail, then the
// problems.
func writeResult(w io.Writer, number int, r CheckResult) {
	verdict := "PASS"
	if !r.Passed {
		verdict = "FAIL"
	}
	fmt.Fprintf(w, "--- %s  %d. %s\n", verdict, number, r.Name)
	for _, line := range strings.Split(strings.TrimRight(r.Detail, "\n"), "\n") {
		fmt.Fprintf(w, "    %s\n", line)
	}
	for _, p := range r.Problems {
		fmt.Fprintf(w, "    problem: %s\n", p)
	}
	fmt.Fprintln(w)
}

type checkResultBuilder struct {
	name     string
	detail   strings.Builder
	problems []string
}

func (b *checkResultBuilder) printf(format string, args ...any) {
	fmt.Fprintf(&b.detail, format, args...)
}

// command records a command run in a namespace with its output.
func (b *checkResultBuilder) command(who string, args []string, out string) {
	b.printf("%s# %s\n", who, strings.Join(args, " "))
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		if line = strings.TrimRight(line, " "); line != "" {
			b.printf("%s\n", line)
		}
	}
	b.printf("\n")
}

func (b *checkResultBuilder) fail(format string, args ...any) {
	b.problems = append(b.problems, fmt.Sprintf(format, args...))
}

func (b *checkResultBuilder) result() CheckResult {
	return CheckResult{
		Name:     b.name,
		Passed:   len(b.problems) == 0,
		Detail:   strings.TrimRight(b.detail.String(), "\n"),
		Problems: b.problems,
	}
}

type checker struct {
	ctx       context.Context
	lab       *Lab
	env       CheckEnv
	reporters map[string]*PeerReporter
	// podErrs keeps the error of a pod that could not be added, so that later checks
	// report it instead of trying again.
	podErrs map[string]error
}

func (c *checker) closeReporters() {
	for _, r := range c.reporters {
		r.Close()
	}
}

// pod returns the check pod of the given name, adding it to its node on first use.
func (c *checker) pod(name string) (*Pod, error) {
	if p := c.lab.Pod(name); p != nil {
		return p, nil
	}
	if err := c.podErrs[name]; err != nil {
		return nil, err
	}
	p, err := c.addPod(name)
	if err != nil {
		if c.podErrs == nil {
			c.podErrs = map[string]error{}
		}
		c.podErrs[name] = err
	}
	return p, err
}

func (c *checker) addPod(name string) (*Pod, error) {
	var nodeName string
	for _, cp := range checkPods {
		if cp.pod == name {
			nodeName = cp.node
		}
	}
	n := c.lab.Node(nodeName)
	if n == nil {
		return nil, fmt.Errorf("add %s: the lab has no node %s; build it from CheckNodes()",
			name, nodeName)
	}
	var conflist []byte
	if c.env.Conflist != nil {
		var err error
		if conflist, err = c.env.Conflist(n); err != nil {
			return nil, fmt.Errorf("get conflist for %s on %s: %w", name, nodeName, err)
		}
	}
	return n.AddPod(c.ctx, name, conflist)
}

// reporter starts a peer reporter once per namespace, network and address.
func (c *checker) reporter(ns *Namespace, network string, addr netip.AddrPort) error {
	key := fmt.Sprintf("%s %s %v", ns.NSName, network, addr)
	if c.reporters[key] != nil {
		return nil
	}
	r, err := ns.StartPeerReporter(network, addr)
	if err != nil {
		return err
	}
	if c.reporters == nil {
		c.reporters = map[string]*PeerReporter{}
	}
	c.reporters[key] = r
	return nil
}

// podReporter starts the TCP peer reporter of a check pod on all its addresses.
func (c *checker) podReporter(p *Pod) error {
	return c.reporter(p.Namespace, "tcp", netip.AddrPortFrom(netip.IPv4Unspecified(),
		checkPodPort))
}

// expectedPodIP returns the address that the checks expect for the first pod of a node:
// the second host address of its pod CIDR, after the gateway.
func expectedPodIP(n *Node) netip.Addr { return n.PodCIDR.Addr().Next().Next() }

func expectedPodGateway(n *Node) netip.Addr { return n.PodCIDR.Addr().Next() }

// 1. Pods get the first free address of their node's range and a default route.
func (c *checker) checkPodAddresses(b *checkResultBuilder) {
	b.name = "pod-a and pod-b get addresses and a default route"
	var pods []*Pod
	for _, name := range []string{"pod-a", "pod-b"} {
		p, err := c.pod(name)
		if err != nil {
			b.fail("%v", err)
			continue
		}
		pods = append(pods, p)
	}
	if len(pods) == 0 {
		return
	}

	tw := tabwriter.NewWriter(&b.detail, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "pod\tnode\taddress\tnamespace")
	for _, p := range pods {
		fmt.Fprintf(tw, "%s\t%s\t%v\t%s\n", p.Name, p.Node.Name, p.IP, p.NSName)
	}
	tw.Flush()
	b.printf("\n")

	for _, p := range pods {
		if want := expectedPodIP(p.Node); p.IP != want {
			b.fail("%s has address %v from CNI, expected %v", p.Name, p.IP, want)
		}
		routeArgs := []string{"ip", "route"}
		out, err := p.Run(c.ctx, routeArgs...)
		b.command(p.Name, routeArgs, out)
		wantRoute := fmt.Sprintf("default via %v", expectedPodGateway(p.Node))
		if err != nil {
			b.fail("ip route in %s failed: %v", p.Name, err)
		} else if !strings.Contains(out, wantRoute) {
			b.fail("%s has no route %q", p.Name, wantRoute)
		}

		addrArgs := []string{"ip", "-4", "-brief", "addr", "show", "dev", "eth0"}
		out, err = p.Run(c.ctx, addrArgs...)
		b.command(p.Name, addrArgs, out)
		if err != nil {
			b.fail("ip addr in %s failed: %v", p.Name, err)
		} else if !strings.Contains(out, " "+p.IP.String()+"/") {
			b.fail("%s does not see its address %v on eth0", p.Name, p.IP)
		}
	}
}

// 2. Pods on two nodes of one subnet reach each other, with the router invisible.
func (c *checker) checkPodPing(b *checkResultBuilder) {
	b.name = "pod-a pings pod-b without loss, reply TTL 62"
	a, errA := c.pod("pod-a")
	p, errB := c.pod("pod-b")
	if errA != nil || errB != nil {
		b.fail("pods missing, see check 1")
		return
	}
	c.ping(b, a.Name, a.Namespace, p.IP, 5, sameSubnetTTL)
}

// ping pings dst from a namespace and checks for no loss and, if wantTTL > 0, the reply TTL.
func (c *checker) ping(b *checkResultBuilder, who string, from *Namespace, dst netip.Addr,
	count, wantTTL int) {
	args := []string{"ping", "-c", strconv.Itoa(count), "-i", "0.2", "-W", "2", dst.String()}
	out, err := from.Run(c.ctx, args...)
	b.command(who, args, out)
	stats := parsePing(out)
	if stats.transmitted == 0 && err != nil {
		b.fail("ping from %s to %v failed: %v", who, dst, err)
		return
	}
	if stats.transmitted != count || stats.received != count {
		b.fail("%s to %v: %d of %d replies", who, dst, stats.received, count)
	}
	if wantTTL > 0 {
		for _, ttl := range stats.ttls {
			if ttl != wantTTL {
				b.fail("%s to %v: reply TTL %d, expected %d", who, dst, ttl, wantTTL)
				break
			}
		}
	}
}

// 3. Traffic between pods keeps the pod addresses as source, in both directions.
func (c *checker) checkPodSources(b *checkResultBuilder) {
	b.name = "pod-a and pod-b see each other's pod address as source"
	a, errA := c.pod("pod-a")
	p, errB := c.pod("pod-b")
	if errA != nil || errB != nil {
		b.fail("pods missing, see check 1")
		return
	}
	c.expectSource(b, a, p, a.IP)
	c.expectSource(b, p, a, p.IP)
}

// expectSource connects from one pod to the peer reporter of another and checks the
// source address the reporter saw.
func (c *checker) expectSource(b *checkResultBuilder, from, to *Pod, want netip.Addr) {
	if err := c.podReporter(to); err != nil {
		b.fail("%v", err)
		return
	}
	dst := netip.AddrPortFrom(to.IP, checkPodPort)
	seen, err := from.QueryPeerReporter(c.ctx, "tcp", dst)
	if err != nil {
		b.printf("%s -> %s %v: %v\n", from.Name, to.Name, dst, err)
		b.fail("%s could not reach %s on tcp %v: %v", from.Name, to.Name, dst, err)
		return
	}
	b.printf("%s -> %s %v: %s saw source %v\n", from.Name, to.Name, dst, to.Name, seen)
	if seen.Addr() != want {
		b.fail("%s saw source %v from %s, expected %v", to.Name, seen.Addr(), from.Name, want)
	}
}

// 4. A pod reaches a Service through its cluster IP.
func (c *checker) checkService(b *checkResultBuilder) {
	b.name = fmt.Sprintf("pod-b connects to Service %v (backend %v)", ServiceVIP,
		ServiceBackend)
	p, err := c.pod("pod-b")
	if err != nil {
		b.fail("pod-b missing, see check 1")
		return
	}
	if err := c.reporter(c.lab.VPC, "tcp", ServiceBackend); err != nil {
		b.fail("%v", err)
		return
	}
	seen, err := p.QueryPeerReporter(c.ctx, "tcp", ServiceVIP)
	if err != nil {
		b.printf("pod-b -> %v: %v\n", ServiceVIP, err)
		b.fail("pod-b could not connect to %v: %v", ServiceVIP, err)
		return
	}
	b.printf("pod-b -> %v: connected; backend %v saw source %v\n", ServiceVIP,
		ServiceBackend, seen)
}

// 5. A pod reaches the internet with its node's address as source.
func (c *checker) checkPodInternet(b *checkResultBuilder) {
	b.name = fmt.Sprintf("pod-b reaches %v as worker-1", InternetIP)
	p, err := c.pod("pod-b")
	if err != nil {
		b.fail("pod-b missing, see check 1")
		return
	}
	c.expectInternetSource(b, p.Namespace, "pod-b", p.Node.IP)
}

func (c *checker) expectInternetSource(b *checkResultBuilder, from *Namespace, who string,
	want netip.Addr) {
	dst := netip.AddrPortFrom(InternetIP, checkInternetPort)
	for _, network := range []string{"tcp", "udp"} {
		if err := c.reporter(c.lab.Ext, network, dst); err != nil {
			b.fail("%v", err)
			return
		}
		seen, err := from.QueryPeerReporter(c.ctx, network, dst)
		if err != nil {
			b.printf("%s -> %s %v: %v\n", who, network, dst, err)
			b.fail("%s got no reply from %s %v: %v", who, network, dst, err)
			continue
		}
		b.printf("%s -> %s %v: replied; ext saw source %v\n", who, network, dst, seen)
		if seen.Addr() != want {
			b.fail("ext saw %s source %v from %s, expected %v", network, seen.Addr(), who,
				want)
		}
	}
}

// 6. A node reaches the internet and its own pods.
func (c *checker) checkNodeReach(b *checkResultBuilder) {
	b.name = fmt.Sprintf("worker-0 reaches %v and pod-a", InternetIP)
	n := c.lab.Node("worker-0")
	if n == nil {
		b.fail("the lab has no node worker-0; build it from CheckNodes()")
		return
	}
	c.expectInternetSource(b, n.Namespace, n.Name, n.IP)
	b.printf("\n")
	a, err := c.pod("pod-a")
	if err != nil {
		b.fail("pod-a missing, see check 1")
		return
	}
	c.ping(b, n.Name, n.Namespace, a.IP, 3, 0)
}

// 7. A node on the second subnet reaches pods of the first through the router.
func (c *checker) checkSecondSubnet(b *checkResultBuilder) {
	b.name = "pod-c on worker-2 (second subnet) and pod-a reach each other, reply TTL 61"
	a, err := c.pod("pod-a")
	if err != nil {
		b.fail("pod-a missing, see check 1")
		return
	}
	pc, err := c.pod("pod-c")
	if err != nil {
		b.fail("%v", err)
		return
	}
	b.printf("pod-c on %s has %v\n\n", pc.Node.Name, pc.IP)
	if want := expectedPodIP(pc.Node); pc.IP != want {
		b.fail("pod-c has address %v from CNI, expected %v", pc.IP, want)
	}
	c.ping(b, a.Name, a.Namespace, pc.IP, 5, crossSubnetTTL)
	c.ping(b, pc.Name, pc.Namespace, a.IP, 5, crossSubnetTTL)
	c.expectSource(b, a, pc, a.IP)
	c.expectSource(b, pc, a, pc.IP)
}

type pingStats struct {
	transmitted, received int
	ttls                  []int
}

var (
	pingSummary = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)
	pingTTL     = regexp.MustCompile(`\bttl=(\d+)`)
)

// parsePing reads the summary line and the TTL of each reply from iputils ping output.
func parsePing(out string) pingStats {
	var s pingStats
	if m := pingSummary.FindStringSubmatch(out); m != nil {
		s.transmitted, _ = strconv.Atoi(m[1])
		s.received, _ = strconv.Atoi(m[2])
	}
	for _, m := range pingTTL.FindAllStringSubmatch(out, -1) {
		ttl, _ := strconv.Atoi(m[1])
		s.ttls = append(s.ttls, ttl)
	}
	return s
}
