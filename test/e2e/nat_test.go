package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferrynet/ferry/pkg/datapath"
	"github.com/ferrynet/ferry/test/lab"
)

// Servers of the internet stand-in and ports of the NAT tests.
var (
	extEcho      = netip.AddrPortFrom(lab.InternetIP, 8080)
	extManyEcho  = netip.AddrPortFrom(lab.InternetIP, 8081)
	extReporter  = netip.AddrPortFrom(lab.InternetIP, 80)
	extUDP       = netip.AddrPortFrom(lab.InternetIP, 9053)
	extBigUDP    = netip.AddrPortFrom(lab.InternetIP, 9054)
	extClosedUDP = netip.AddrPortFrom(lab.InternetIP, 9999)
)

// labMasquerade is the masquerade section of the lab's ferryd configuration,
// which newNATLab replaces.
const labMasquerade = "masquerade:\n  enabled: true\n  natTableSize: 65536\n"

// newNATLab builds a lab of nodes and starts ferryd on each with masquerade
// as its masquerade section (YAML lines under "masquerade:").
func newNATLab(t *testing.T, nodes []lab.NodeSpec, masquerade string) *lab.Lab {
	t.Helper()
	lab.SkipUnlessPrivileged(t)
	lab.SkipWithoutPlugins(t, []string{"/usr/lib/cni"}, "host-local", "loopback")
	l := lab.NewTest(t, lab.Options{Nodes: nodes, CNIBinDirs: []string{binDir, "/usr/lib/cni"}})
	opts := lab.FerryOptions{BinDir: binDir}
	for _, n := range l.Nodes {
		cfg := string(n.FerrydConfig(opts))
		if !strings.Contains(cfg, labMasquerade) {
			t.Fatalf("the lab's ferryd config has no section %q to replace:\n%s",
				labMasquerade, cfg)
		}
		cfg = strings.Replace(cfg, labMasquerade, "masquerade:\n"+masquerade, 1)
		if err := os.WriteFile(n.FerrydConfigPath(), []byte(cfg), 0o644); err != nil {
			t.Fatalf("write ferryd config of %s: %v", n.Name, err)
		}
		if _, err := n.RestartFerryd(context.Background(), binDir); err != nil {
			t.Fatalf("start ferryd on %s: %v", n.Name, err)
		}
	}
	return l
}

func startEcho(t *testing.T, ns *lab.Namespace, addr netip.AddrPort) *lab.Server {
	t.Helper()
	s, err := ns.StartTCPEcho(addr)
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func startUDP(t *testing.T, ns *lab.Namespace, addr netip.AddrPort, size int) *lab.Server {
	t.Helper()
	s, err := ns.StartUDPResponder(addr, size)
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func startReporter(t *testing.T, ns *lab.Namespace, network string,
	addr netip.AddrPort) {
	t.Helper()
	r, err := ns.StartPeerReporter(network, addr)
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() { r.Close() })
}

// echoOnce sends data over c and requires the same bytes back.
func echoOnce(c net.Conn, data []byte) error {
	if err := c.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		errc <- err
	}()
	got := make([]byte, len(data))
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("read echo: %w", err)
	}
	if err := <-errc; err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if !bytes.Equal(got, data) {
		return errors.New("echo differs from the data sent")
	}
	return nil
}

// udpExchange sends each request from one socket in ns to addr, back to
// back, and returns the replies that arrive within a second of each other.
func udpExchange(ns *lab.Namespace, addr netip.AddrPort, requests ...string) ([]string, error) {
	var c net.Conn
	err := ns.Do(func() error {
		var err error
		c, err = net.Dial("udp", addr.String())
		return err
	})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	for _, r := range requests {
		if _, err := c.Write([]byte(r)); err != nil {
			return nil, err
		}
	}
	var replies []string
	buf := make([]byte, 65536)
	for range requests {
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := c.Read(buf)
		if err != nil {
			return replies, err
		}
		replies = append(replies, string(buf[:n]))
	}
	return replies, nil
}

// natFlows lists the node's NAT flows.
func natFlows(t *testing.T, n *lab.Node) []datapath.NATFlow {
	t.Helper()
	maps, err := datapath.OpenMaps(n.BPFFSDir())
	if err != nil {
		t.Fatalf("open maps of %s: %v", n.Name, err)
	}
	defer maps.Close()
	flows, err := maps.NATFlows()
	if err != nil {
		t.Fatalf("list NAT flows of %s: %v", n.Name, err)
	}
	return flows
}

// TestNAT runs the masquerade cases on one lab: worker-0 with five pods,
// worker-1 with one, ext behind the vpc router, and 10.0.1.10 excluded
// from the masquerade.
func TestNAT(t *testing.T) {
	nodes := lab.CheckNodes()[:2]
	l := newNATLab(t, nodes, "  enabled: true\n  natTableSize: 65536\n"+
		"  excludeCIDRs: [10.0.1.10/32]\n")
	w0, w1 := l.Node("worker-0"), l.Node("worker-1")
	// The vpc router routes worker-0's pods, so that the excluded host can reply.
	if err := l.AddCloudRoute(w0); err != nil {
		t.Fatalf("%v", err)
	}
	pods := []*lab.Pod{addPod(t, w0, "pod-a"), addPod(t, w0, "pod-b"), addPod(t, w0, "pod-d"),
		addPod(t, w0, "pod-e")}
	podA, podB := pods[0], pods[1]
	podC := addPod(t, w1, "pod-c")

	startReporter(t, l.Ext, "tcp", extReporter)
	startReporter(t, l.Ext, "udp", extReporter)
	startEcho(t, l.Ext, extEcho)
	startUDP(t, l.Ext, extUDP, 64)
	startUDP(t, l.Ext, extBigUDP, 3000)

	t.Run("which traffic", func(t *testing.T) {
		testWhichTraffic(t, l, podA, podC)
	})
	t.Run("TCP and UDP", func(t *testing.T) {
		for _, network := range []string{"tcp", "udp"} {
			if peer := queryPeer(t, podA.Namespace, network, extReporter); peer.Addr() != w0.IP {
				t.Errorf("%s: internet host saw %s, want the node IP %s", network, peer, w0.IP)
			}
		}
	})
	t.Run("UDP without checksum", func(t *testing.T) {
		testUDPWithoutChecksum(t, podA)
	})
	t.Run("back-to-back UDP queries", func(t *testing.T) {
		for i := range 30 {
			replies, err := udpExchange(podB.Namespace, extUDP, "A?", "AAAA?")
			if err != nil || len(replies) != 2 {
				t.Fatalf("exchange %d: %d replies of 2: %v", i, len(replies), err)
			}
		}
	})
	t.Run("ICMP echo identifiers", func(t *testing.T) {
		for _, id := range []uint16{0x4242, 0} {
			testEchoIdentifiers(t, w0, podA, podB, id)
		}
	})
	t.Run("port unreachable", func(t *testing.T) {
		testPortUnreachable(t, podA)
	})
	t.Run("traceroute", func(t *testing.T) {
		for _, method := range []string{"udp", "icmp"} {
			testTraceroute(t, podA, method)
		}
	})
	t.Run("fragmented ping", func(t *testing.T) {
		before := counters(t, w0)
		out, err := podA.Run(context.Background(), "ping", "-n", "-c", "3", "-i", "0.2",
			"-W", "2", "-s", "3000", lab.InternetIP.String())
		if err != nil || !strings.Contains(out, "3 received") {
			t.Errorf("ping -s 3000 from pod-a: %v\n%s", err, out)
		}
		after := counters(t, w0)
		for _, c := range []string{"snat-fragment", "rev-snat-fragment"} {
			if after[c] <= before[c] {
				t.Errorf("counter %s stayed at %d", c, after[c])
			}
		}
	})
	t.Run("large UDP replies", func(t *testing.T) {
		for i := range 5 {
			replies, err := udpExchange(podA.Namespace, extBigUDP, "big?")
			if err != nil || len(replies) != 1 {
				t.Fatalf("query %d: %v", i, err)
			}
			if len(replies[0]) != 3000 || !strings.HasPrefix(replies[0], w0.IP.String()+":") {
				t.Errorf("reply %d: %d bytes starting %.20q, want 3000 from the node IP", i,
					len(replies[0]), replies[0])
			}
		}
	})
	t.Run("checksum offload", func(t *testing.T) {
		for _, tx := range []string{"off", "on"} {
			testChecksumOffload(t, podB, tx)
		}
	})
	t.Run("same source port from pods and node", func(t *testing.T) {
		testSameSourcePort(t, l, w0, pods)
	})
	t.Run("pod port that the node listens on", func(t *testing.T) {
		testNodeListenerPort(t, l, w0, podA)
	})
	t.Run("node port that a mapping holds", func(t *testing.T) {
		testNodePortHeld(t, l, w0, podA)
	})
	t.Run("ferryctl nat", func(t *testing.T) {
		testFerryctlNAT(t, w0, podA)
	})
	t.Run("10000 connections", func(t *testing.T) {
		testManyConnections(t, l, w0, pods)
	})
	// Last, because the smaller MTU stays.
	t.Run("path MTU", func(t *testing.T) {
		testPathMTU(t, l, podA)
	})
}

// queryPeer returns the source address that a peer reporter saw.
func queryPeer(t *testing.T, ns *lab.Namespace, network string,
	addr netip.AddrPort) netip.AddrPort {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	peer, err := ns.QueryPeerReporter(ctx, network, addr)
	if err != nil {
		t.Fatalf("%s to %s from %s: %v", network, addr, ns.NSName, err)
	}
	return peer
}

// testWhichTraffic checks which destinations see the node IP: only those
// outside the cluster and outside the exclusions.
func testWhichTraffic(t *testing.T, l *lab.Lab, podA, podC *lab.Pod) {
	w0, w1 := podA.Node, podC.Node
	cases := []struct {
		name string
		ns   *lab.Namespace
		addr netip.AddrPort
		want netip.Addr
	}{
		{"pod on another node", podC.Namespace, netip.AddrPortFrom(podC.IP, 7300), podA.IP},
		{"another node's IP", w1.Namespace, netip.AddrPortFrom(w1.IP, 7301), podA.IP},
		{"own node's IP", w0.Namespace, netip.AddrPortFrom(w0.IP, 7302), podA.IP},
		{"excluded host", l.VPC, netip.AddrPortFrom(lab.OutsideHostIP, 7303), podA.IP},
		{"internet host", l.Ext, netip.AddrPortFrom(lab.InternetIP, 7304), w0.IP},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			startReporter(t, c.ns, "tcp", c.addr)
			if peer := queryPeer(t, podA.Namespace, "tcp", c.addr); peer.Addr() != c.want {
				t.Errorf("%s saw %s, want %s", c.addr, peer.Addr(), c.want)
			}
		})
	}
	t.Run("node's own traffic", func(t *testing.T) {
		before := len(natFlows(t, w0))
		if peer := queryPeer(t, w0.Namespace, "tcp", extReporter); peer.Addr() != w0.IP {
			t.Errorf("internet host saw %s, want the node IP %s", peer.Addr(), w0.IP)
		}
		if after := len(natFlows(t, w0)); after != before {
			t.Errorf("the node's own connection added NAT flows: %d, before %d", after, before)
		}
	})
}

// testUDPWithoutChecksum sends UDP with a zero checksum (SO_NO_CHECK), which
// the internet host accepts only when the translation kept it zero.
func testUDPWithoutChecksum(t *testing.T, pod *lab.Pod) {
	var c *net.UDPConn
	err := pod.Do(func() error {
		var err error
		c, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(extUDP))
		return err
	})
	if err != nil {
		t.Fatalf("open UDP socket: %v", err)
	}
	defer c.Close()
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	raw.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_NO_CHECK, 1)
	})
	if serr != nil {
		t.Fatalf("set SO_NO_CHECK: %v", serr)
	}
	buf := make([]byte, 128)
	for i := range 3 {
		if _, err := c.Write([]byte("no checksum")); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(buf); err != nil {
			t.Fatalf("datagram %d without checksum got no reply: %v", i, err)
		}
	}
}

// echoReplies sends count ICMP echo requests, 100 ms apart, with
// identifier id from ns to the internet host over a raw socket and returns
// the payloads of the echo replies with that identifier that arrive. Each
// payload starts with mark.
func echoReplies(ns *lab.Namespace, id uint16, mark string, count int) ([]string, error) {
	var fd int
	err := ns.Do(func() error {
		var err error
		fd, err = syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_ICMP)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open raw ICMP socket in %s: %w", ns, err)
	}
	defer syscall.Close(fd)
	tv := syscall.Timeval{Usec: 20000}
	if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO,
		&tv); err != nil {
		return nil, err
	}
	dst := &syscall.SockaddrInet4{Addr: lab.InternetIP.As4()}

	var replies []string
	buf := make([]byte, 1500)
	next := time.Now()
	deadline := next.Add(time.Duration(count)*100*time.Millisecond + 2*time.Second)
	sent := 0
	for time.Now().Before(deadline) && (sent < count || len(replies) < count) {
		if sent < count && !time.Now().Before(next) {
			msg := echoRequest(id, uint16(sent), fmt.Sprintf("%s %d", mark, sent))
			if err := syscall.Sendto(fd, msg, 0, dst); err != nil {
				return replies, fmt.Errorf("send echo request: %w", err)
			}
			sent++
			next = next.Add(100 * time.Millisecond)
		}
		n, _, err := syscall.Recvfrom(fd, buf, 0)
		if err != nil || n < 20 {
			continue
		}
		ihl := int(buf[0]&0x0f) * 4
		icmp := buf[ihl:n]
		if len(icmp) < 8 || icmp[0] != 0 || binary.BigEndian.Uint16(icmp[4:]) != id {
			continue
		}
		replies = append(replies, string(icmp[8:]))
	}
	return replies, nil
}

func echoRequest(id, seq uint16, payload string) []byte {
	msg := make([]byte, 8+len(payload))
	msg[0] = 8
	binary.BigEndian.PutUint16(msg[4:], id)
	binary.BigEndian.PutUint16(msg[6:], seq)
	copy(msg[8:], payload)
	var sum uint32
	for i := 0; i+1 < len(msg); i += 2 {
		sum += uint32(msg[i])<<8 | uint32(msg[i+1])
	}
	if len(msg)%2 == 1 {
		sum += uint32(msg[len(msg)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(msg[2:], ^uint16(sum))
	return msg
}

// testEchoIdentifiers pings the internet host from the node and two pods at
// once, all with identifier id, and requires each to get the replies to its
// own requests and no others. The node starts first, so that the pods'
// mappings must avoid the identifier that the node's pings use.
func testEchoIdentifiers(t *testing.T, node *lab.Node, podA, podB *lab.Pod, id uint16) {
	const count = 5
	senders := []struct {
		mark string
		ns   *lab.Namespace
	}{{"node", node.Namespace}, {"pod-a", podA.Namespace}, {"pod-b", podB.Namespace}}
	var (
		mu      sync.Mutex
		wg      sync.WaitGroup
		results = map[string][]string{}
	)
	for i, sender := range senders {
		mark, ns := sender.mark, sender.ns
		if i == 1 {
			time.Sleep(50 * time.Millisecond)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			replies, err := echoReplies(ns, id, mark, count)
			if err != nil {
				t.Errorf("ping from %s: %v", mark, err)
			}
			mu.Lock()
			results[mark] = replies
			mu.Unlock()
		}()
	}
	wg.Wait()
	for mark, replies := range results {
		seen := map[string]bool{}
		for _, r := range replies {
			if !strings.HasPrefix(r, mark+" ") {
				t.Errorf("identifier %#x: %s got the reply %q of another sender", id, mark, r)
			}
			seen[r] = true
		}
		for seq := range count {
			if want := fmt.Sprintf("%s %d", mark, seq); !seen[want] {
				t.Errorf("identifier %#x: %s got no reply to request %d", id, mark, seq)
			}
		}
	}
}

// testPortUnreachable sends UDP to a closed port of the internet host. The
// pod's socket reports "connection refused" only when the ICMP error came
// back with the quoted addresses and ports of the pod's own datagram.
func testPortUnreachable(t *testing.T, pod *lab.Pod) {
	before := counters(t, pod.Node)
	var c net.Conn
	err := pod.Do(func() error {
		var err error
		c, err = net.Dial("udp", extClosedUDP.String())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 64)
	var readErr error
	for range 3 {
		c.Write([]byte("anyone?"))
		c.SetReadDeadline(time.Now().Add(time.Second))
		_, readErr = c.Read(buf)
		if errors.Is(readErr, syscall.ECONNREFUSED) {
			break
		}
	}
	if !errors.Is(readErr, syscall.ECONNREFUSED) {
		t.Errorf("UDP to a closed port: read error %v, want connection refused", readErr)
	}
	if after := counters(t, pod.Node); after["rev-snat-icmp-error"] <= before["rev-snat-icmp-error"] {
		t.Errorf("counter rev-snat-icmp-error stayed at %d", after["rev-snat-icmp-error"])
	}
}

var hopPattern = regexp.MustCompile(`(?m)^\s*(\d+)\s+(\S+)`)

// testTraceroute traces the route from the pod to the internet host and
// requires a reply from every hop: the node, the vpc router and the host.
func testTraceroute(t *testing.T, pod *lab.Pod, method string) {
	args := []string{"traceroute", "-n", "-q", "1", "-w", "2", "-m", "6"}
	if method == "icmp" {
		args = append(args, "-I")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := pod.Run(ctx, append(args, lab.InternetIP.String())...)
	if err != nil {
		t.Fatalf("traceroute (%s): %v\n%s", method, err, out)
	}
	var hops []string
	for _, m := range hopPattern.FindAllStringSubmatch(out, -1) {
		hops = append(hops, m[2])
	}
	want := []string{pod.Node.IP.String(), pod.Node.Gateway().String(),
		lab.InternetIP.String()}
	if strings.Join(hops, " ") != strings.Join(want, " ") {
		t.Errorf("traceroute (%s) hops %v, want %v:\n%s", method, hops, want, out)
	}
}

// testChecksumOffload sets the pod's transmit checksum offload and sends TCP
// and UDP through the masquerade: a wrong checksum would stall or lose them.
func testChecksumOffload(t *testing.T, pod *lab.Pod, tx string) {
	ctx := context.Background()
	if out, err := pod.Run(ctx, "ethtool", "-K", "eth0", "tx", tx); err != nil {
		t.Fatalf("ethtool -K eth0 tx %s: %v\n%s", tx, err, out)
	}
	c, err := pod.DialTCP(ctx, extEcho, 0)
	if err != nil {
		t.Fatalf("tx %s: %v", tx, err)
	}
	defer c.Close()
	data := make([]byte, 256<<10)
	rand.Read(data)
	if err := echoOnce(c, data); err != nil {
		t.Errorf("tx %s: TCP echo of %d bytes: %v", tx, len(data), err)
	}
	if replies, err := udpExchange(pod.Namespace, extUDP, "query"); err != nil ||
		len(replies) != 1 {
		t.Errorf("tx %s: UDP query: %v", tx, err)
	}
}

// testSameSourcePort connects every pod and the node at the same moment from
// local port 40000 to one internet address and port.
func testSameSourcePort(t *testing.T, l *lab.Lab, node *lab.Node, pods []*lab.Pod) {
	const port = 40000
	clients := []*lab.Namespace{node.Namespace}
	for _, p := range pods {
		clients = append(clients, p.Namespace)
	}
	s := startEcho(t, l.Ext, netip.AddrPortFrom(lab.InternetIP, 8090))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	conns := make([]*net.TCPConn, len(clients))
	errs := make([]error, len(clients))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, ns := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			conns[i], errs[i] = ns.DialTCP(ctx, s.Addr, port)
		}()
	}
	close(start)
	wg.Wait()
	for i, c := range conns {
		if errs[i] != nil {
			t.Errorf("client %s: %v", clients[i], errs[i])
			continue
		}
		defer c.Close()
		if err := echoOnce(c, []byte(clients[i].NSName)); err != nil {
			t.Errorf("client %s: %v", clients[i], err)
		}
	}
	seen := map[netip.AddrPort]bool{}
	for _, p := range s.Peers() {
		if p.Addr() != node.IP {
			t.Errorf("internet host saw source %s, want the node IP", p)
		}
		if seen[p] {
			t.Errorf("two connections came from %s", p)
		}
		seen[p] = true
	}
	if len(seen) != len(clients) {
		t.Errorf("internet host saw %d connections, want %d", len(seen), len(clients))
	}
}

// testNodeListenerPort connects a pod from the port that the node listens
// on: the masquerade must take another port, and the listener must stay
// reachable from the internet host.
func testNodeListenerPort(t *testing.T, l *lab.Lab, node *lab.Node, pod *lab.Pod) {
	const port = 40100
	var listener net.Listener
	err := node.Do(func() error {
		var err error
		listener, err = net.Listen("tcp", fmt.Sprintf(":%d", port))
		return err
	})
	if err != nil {
		t.Fatalf("listen on the node: %v", err)
	}
	defer listener.Close()
	go func() {
		for {
			c, err := listener.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "node\n")
			c.Close()
		}
	}()

	s := startEcho(t, l.Ext, netip.AddrPortFrom(lab.InternetIP, 8091))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pod.DialTCP(ctx, s.Addr, port)
	if err != nil {
		t.Fatalf("%v", err)
	}
	defer c.Close()
	if err := echoOnce(c, []byte("hello")); err != nil {
		t.Fatalf("echo: %v", err)
	}
	peers := s.Peers()
	if len(peers) != 1 || peers[0].Addr() != node.IP || peers[0].Port() == port {
		t.Errorf("internet host saw %v, want one connection from the node IP and a port "+
			"other than %d", peers, port)
	}

	// The internet host reaches the node's listener while the pod's flow lives.
	ext, err := l.Ext.DialTCP(ctx, netip.AddrPortFrom(node.IP, port), 0)
	if err != nil {
		t.Fatalf("connect from the internet host to the node's listener: %v", err)
	}
	defer ext.Close()
	ext.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := io.ReadAll(ext)
	if err != nil || string(line) != "node\n" {
		t.Errorf("node's listener answered %q, %v; want \"node\\n\"", line, err)
	}
}

// testNodePortHeld opens a pod flow from a port and then a node connection
// from the same port to the same server: the node's flow moves to another
// port and both work.
func testNodePortHeld(t *testing.T, l *lab.Lab, node *lab.Node, pod *lab.Pod) {
	const port = 40200
	s := startEcho(t, l.Ext, netip.AddrPortFrom(lab.InternetIP, 8092))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	before := counters(t, node)

	podConn, err := pod.DialTCP(ctx, s.Addr, port)
	if err != nil {
		t.Fatalf("%v", err)
	}
	defer podConn.Close()
	if err := echoOnce(podConn, []byte("pod")); err != nil {
		t.Fatalf("pod echo: %v", err)
	}
	nodeConn, err := node.DialTCP(ctx, s.Addr, port)
	if err != nil {
		t.Fatalf("%v", err)
	}
	defer nodeConn.Close()
	for name, c := range map[string]net.Conn{"node": nodeConn, "pod": podConn} {
		if err := echoOnce(c, bytes.Repeat([]byte(name), 1000)); err != nil {
			t.Errorf("%s echo: %v", name, err)
		}
	}

	peers := s.Peers()
	if len(peers) != 2 {
		t.Fatalf("internet host saw %v, want two connections", peers)
	}
	if peers[0].Port() != port {
		t.Errorf("pod's connection came from %s, want port %d kept", peers[0], port)
	}
	if peers[1].Port() == port {
		t.Errorf("node's connection came from %s too, want another port", peers[1])
	}
	if after := counters(t, node); after["snat-node-port"] <= before["snat-node-port"] {
		t.Errorf("counter snat-node-port stayed at %d", after["snat-node-port"])
	}
}

// testFerryctlNAT lists the pod's flows with ferryctl.
func testFerryctlNAT(t *testing.T, node *lab.Node, pod *lab.Pod) {
	ctx := context.Background()
	c, err := pod.DialTCP(ctx, extEcho, 40300)
	if err != nil {
		t.Fatalf("%v", err)
	}
	defer c.Close()
	if err := echoOnce(c, []byte("listed")); err != nil {
		t.Fatalf("echo: %v", err)
	}
	out, err := node.Ferryctl(ctx, binDir, "nat", "--pod", pod.IP.String())
	if err != nil {
		t.Fatalf("ferryctl nat: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 2 || !strings.HasPrefix(lines[0], "PROTO") {
		t.Fatalf("ferryctl nat --pod printed no flows:\n%s", out)
	}
	want := regexp.MustCompile(`tcp\s+` + regexp.QuoteMeta(pod.IP.String()) + `:40300\s+` +
		regexp.QuoteMeta(extEcho.String()) + `\s+` + regexp.QuoteMeta(node.IP.String()) +
		`:40300\s+established\s`)
	if !want.MatchString(out) {
		t.Errorf("ferryctl nat --pod lacks the established flow from port 40300:\n%s", out)
	}
	for _, line := range lines[1:] {
		if fields := strings.Fields(line); len(fields) < 2 ||
			!strings.HasPrefix(fields[1], pod.IP.String()+":") {
			t.Errorf("ferryctl nat --pod %s listed another source: %s", pod.IP, line)
		}
	}
}

// manyConnections is how many masqueraded connections testManyConnections
// holds open at once.
const manyConnections = 10000

// startEchoServer builds test/lab/cmd/echoserver and runs it in ext on addr,
// as a process of its own: the test process keeps the client ends only.
func startEchoServer(t *testing.T, l *lab.Lab, addr netip.AddrPort) {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "echoserver")
	if err := lab.GoBuild(bin, nil, "./test/lab/cmd/echoserver"); err != nil {
		t.Fatalf("build echoserver: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	p, err := l.Ext.Start(ctx, bin, "-listen", addr.String())
	if err != nil {
		t.Fatalf("%v", err)
	}
	for range 100 {
		c, err := l.Ext.DialTCP(ctx, addr, 0)
		if err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("echoserver does not accept connections on %s: %s", addr, p.Output())
}

// testManyConnections opens 10,000 connections from the pods to one server,
// holds them all open, and requires a reply on every one with a source of its
// own at the node IP.
func testManyConnections(t *testing.T, l *lab.Lab, node *lab.Node, pods []*lab.Pod) {
	startEchoServer(t, l, extManyEcho)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	before := counters(t, node)

	const dialers = 32
	per := manyConnections / len(pods)
	var (
		mu       sync.Mutex
		conns    []*net.TCPConn
		failures []error
		wg       sync.WaitGroup
	)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for _, pod := range pods {
		work := make(chan int)
		for range dialers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range work {
					c, err := pod.DialTCP(ctx, extManyEcho, 0)
					mu.Lock()
					if err != nil {
						failures = append(failures, err)
					} else {
						conns = append(conns, c)
					}
					mu.Unlock()
				}
			}()
		}
		go func() {
			for i := range per {
				work <- i
			}
			close(work)
		}()
	}
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d of %d connections failed, the first: %v", len(failures),
			manyConnections, failures[0])
	}

	// Every connection is open now; each requests the source the server sees.
	sources := make([]string, len(conns))
	errs := make([]error, len(conns))
	sem := make(chan struct{}, 256)
	for i, c := range conns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			sources[i], errs[i] = askSource(c)
		}()
	}
	wg.Wait()
	seen := map[string]bool{}
	failed := 0
	for i, src := range sources {
		if errs[i] != nil {
			if failed++; failed <= 3 {
				t.Errorf("connection %d: %v", i, errs[i])
			}
			continue
		}
		peer, err := netip.ParseAddrPort(src)
		if err != nil || peer.Addr() != node.IP {
			t.Errorf("connection %d: server saw source %q, want the node IP", i, src)
		}
		if seen[src] {
			t.Errorf("connection %d: two connections came from %s", i, src)
		}
		seen[src] = true
	}
	if failed > 0 {
		t.Errorf("%d of %d open connections got no answer", failed, len(conns))
	}
	after := counters(t, node)
	for _, r := range []string{"drop-nat-no-port", "drop-nat-table-full"} {
		if after[r] != before[r] {
			t.Errorf("counter %s grew by %d", r, after[r]-before[r])
		}
	}
}

// askSource sends a line to an echoserver and returns its reply, the
// connection's source address as the server saw it.
func askSource(c *net.TCPConn) (string, error) {
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write([]byte("?\n")); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read reply: %w", err)
	}
	return strings.TrimSpace(line), nil
}

// testPathMTU lowers the MTU between the router and the internet host and
// sends data both ways with DF set: the pod must learn the path MTU from the
// translated "fragmentation needed" errors.
func testPathMTU(t *testing.T, l *lab.Lab, pod *lab.Pod) {
	if err := l.SetExtMTU(1400); err != nil {
		t.Fatalf("%v", err)
	}
	ctx := context.Background()
	c, err := pod.DialTCP(ctx, extEcho, 0)
	if err != nil {
		t.Fatalf("%v", err)
	}
	defer c.Close()
	data := make([]byte, 2<<20)
	rand.Read(data)
	if err := echoOnce(c, data); err != nil {
		t.Fatalf("TCP echo of %d bytes over the 1400-byte path: %v", len(data), err)
	}
	out, err := pod.Run(ctx, "ip", "route", "get", lab.InternetIP.String())
	if err != nil {
		t.Fatalf("ip route get: %v\n%s", err, out)
	}
	if !strings.Contains(out, "mtu 1400") {
		t.Errorf("pod has no path MTU of 1400 cached for %s:\n%s", lab.InternetIP, out)
	}
}

// churnUDP starts count short UDP flows from ns to addr, each from its own
// socket, 100 at a time, and returns how many got their reply.
func churnUDP(ns *lab.Namespace, addr netip.AddrPort, count int) int {
	var (
		mu       sync.Mutex
		answered int
		wg       sync.WaitGroup
	)
	sem := make(chan struct{}, 100)
	for range count {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			var c net.Conn
			if err := ns.Do(func() error {
				var err error
				c, err = net.Dial("udp", addr.String())
				return err
			}); err != nil {
				return
			}
			defer c.Close()
			c.Write([]byte("q"))
			c.SetReadDeadline(time.Now().Add(time.Second))
			if _, err := c.Read(make([]byte, 128)); err == nil {
				mu.Lock()
				answered++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return answered
}

// TestNATSmallTable churns short flows through a table of 1024 flows while
// one long-lived flow runs: the long-lived flow keeps its node port, the
// table never holds half a flow, and flows that find no room are dropped and
// counted. Then ferryd expires the UDP flows after their configured timeout
// and keeps the long-lived one.
func TestNATSmallTable(t *testing.T) {
	l := newNATLab(t, lab.CheckNodes()[:1], "  enabled: true\n  natTableSize: 1024\n"+
		"  timeouts: {udp: 2s}\n")
	w0 := l.Node("worker-0")
	churn, long := addPod(t, w0, "churn"), addPod(t, w0, "long")
	s := startEcho(t, l.Ext, extEcho)
	startUDP(t, l.Ext, extUDP, 64)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	lived, err := long.DialTCP(ctx, extEcho, 41000)
	if err != nil {
		t.Fatalf("%v", err)
	}
	defer lived.Close()

	// 1500 short UDP flows, each from a new source port, overflow the table;
	// the long-lived flow echoes between batches.
	answered := 0
	for batch := range 15 {
		answered += churnUDP(churn.Namespace, extUDP, 100)
		if err := echoOnce(lived, []byte(fmt.Sprintf("batch %d\n", batch))); err != nil {
			t.Fatalf("long-lived flow after batch %d: %v", batch, err)
		}
	}
	c := counters(t, w0)
	t.Logf("%d of 1500 short flows answered; %d packets dropped for a full table", answered,
		c["drop-nat-table-full"])
	if c["drop-nat-table-full"] == 0 {
		t.Errorf("no packet was dropped for a full table: the test did not fill it")
	}
	if answered < 900 {
		t.Errorf("only %d short flows were answered, want about the 1023 that fit", answered)
	}

	peers := s.Peers()
	if len(peers) != 1 || peers[0] != netip.AddrPortFrom(w0.IP, 41000) {
		t.Errorf("internet host saw the long-lived flow from %v, want only %s:41000", peers,
			w0.IP)
	}
	for _, f := range natFlows(t, w0) {
		if !f.Paired {
			t.Errorf("flow %s -> %s has no ingress entry", f.Original.Src, f.Original.Dst)
		}
	}

	// ferryd expires the UDP flows after masquerade.timeouts.udp; its
	// collector runs every 10 seconds.
	var left []datapath.NATFlow
	for range 60 {
		left = left[:0]
		for _, f := range natFlows(t, w0) {
			if f.Proto == syscall.IPPROTO_UDP {
				left = append(left, f)
			}
		}
		if len(left) == 0 {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if len(left) > 0 {
		t.Errorf("%d UDP flows remain 30 s after the churn, with a UDP timeout of 2 s", len(left))
	}
	kept := false
	for _, f := range natFlows(t, w0) {
		kept = kept || f.Original.Src == netip.AddrPortFrom(long.IP, 41000)
	}
	if !kept {
		t.Errorf("ferryd expired the established long-lived flow")
	}
	if err := echoOnce(lived, []byte("after expiry\n")); err != nil {
		t.Errorf("long-lived flow after the expiry: %v", err)
	}
}
