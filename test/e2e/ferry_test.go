package e2e

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ferrynet/ferry/test/lab"
)

// TestFerryChecks runs the checks of the hand-wired setup on ferry, in both attach modes.
// The vpc router has no route for worker-1's pod range: worker-0 and worker-1 share a
// subnet and ferry sends their pods' traffic straight to each other.
func TestFerryChecks(t *testing.T) {
	for _, mode := range []string{"tcx", "clsact"} {
		t.Run(mode, func(t *testing.T) {
			if mode == "tcx" && !kernelAtLeast(6, 6) {
				t.Skip("skipping: tcx links need Linux 6.6 or later")
			}
			l, opts := newFerryLab(t, lab.CheckNodes(), lab.FerryOptions{
				AttachMode:  mode,
				CloudRoutes: []string{"worker-0", "worker-2"},
			})
			dp := lab.Ferry(opts)

			var out strings.Builder
			results := lab.RunChecks(context.Background(), l, lab.CheckEnv{Conflist: dp.Conflist},
				&out)
			t.Logf("check output:\n%s", out.String())
			if len(results) != 7 {
				t.Fatalf("RunChecks returned %d results, expected 7", len(results))
			}
			for i, r := range results {
				if !r.Passed {
					t.Errorf("check %d (%s) failed: %s", i+1, r.Name,
						strings.Join(r.Problems, "; "))
				}
			}

			c := counters(t, l.Node("worker-0"))
			if c["forward-remote"] == 0 {
				t.Errorf("worker-0 forwarded no packet to another node in BPF: %v", c)
			}
			if c["forward-local"] == 0 {
				t.Errorf("worker-0 delivered no packet to a pod in BPF: %v", c)
			}
			if c := counters(t, l.Node("worker-1")); c["snat"] == 0 {
				t.Errorf("worker-1 masqueraded no packet of pod-b in BPF: %v", c)
			}
		})
	}
}

// TestFerrySameNode covers traffic that stays on one node.
func TestFerrySameNode(t *testing.T) {
	l, _ := newFerryLab(t, lab.CheckNodes()[:1], lab.FerryOptions{})
	n := l.Node("worker-0")
	a := addPod(t, n, "pod-a")
	b := addPod(t, n, "pod-x")

	if _, ttl := ping(t, a, b.IP, 3); ttl != 63 {
		t.Errorf("pod-a to pod-x reply TTL %d, expected 63 (one routing hop)", ttl)
	}
	ping(t, b, a.IP, 3)
	ping(t, a, a.IP, 2)
	ping(t, a, n.IP, 3)
	ping(t, n, a.IP, 3)

	reporter, err := b.StartPeerReporter("tcp", netip.AddrPortFrom(b.IP, 7000))
	if err != nil {
		t.Fatalf("start reporter in pod-x: %v", err)
	}
	defer reporter.Close()
	if peer := queryTCP(t, a.Namespace, netip.AddrPortFrom(b.IP, 7000)); peer.Addr() != a.IP {
		t.Errorf("pod-x saw TCP from %s, expected pod-a's %s", peer.Addr(), a.IP)
	}
	if c := counters(t, n); c["arp-reply"] == 0 {
		t.Errorf("no ARP request of a pod answered in BPF: %v", c)
	}
}

// TestFerryNoBridgeNoIptables checks that ferry networks pods without a bridge and
// without any iptables rule of its own.
func TestFerryNoBridgeNoIptables(t *testing.T) {
	lab.SkipUnlessPrivileged(t)
	l := lab.NewTest(t, lab.Options{Nodes: lab.CheckNodes()[:1],
		CNIBinDirs: []string{binDir, "/usr/lib/cni"}})
	n := l.Node("worker-0")
	ctx := context.Background()
	if _, err := n.StartFerryd(ctx, lab.FerryOptions{BinDir: binDir}); err != nil {
		t.Fatalf("start ferryd: %v", err)
	}
	a := addPod(t, n, "pod-a")
	ping(t, a, n.IP, 1)

	links, err := n.Run(ctx, "ip", "-o", "link", "show", "type", "bridge")
	if err != nil {
		t.Fatalf("list bridges: %v", err)
	}
	if strings.TrimSpace(links) != "" {
		t.Errorf("node has a bridge:\n%s", links)
	}
	rules, err := n.Run(ctx, "iptables-save")
	if err != nil {
		t.Fatalf("iptables-save: %v", err)
	}
	for _, line := range strings.Split(rules, "\n") {
		if strings.HasPrefix(line, "-A") {
			t.Errorf("node has an iptables rule: %s", line)
		}
	}
}

// TestFerryServiceBackends sends 200 connections to a ClusterIP with two backends of each
// kind: pods on the client's node, pods on another node, and listeners outside the cluster.
// Each connection must complete, which proves that replies came back from the ClusterIP.
func TestFerryServiceBackends(t *testing.T) {
	l, _ := newFerryLab(t, lab.CheckNodes()[:2], lab.FerryOptions{})
	w0, w1 := l.Node("worker-0"), l.Node("worker-1")
	client := addPod(t, w0, "client")
	local1, local2 := addPod(t, w0, "local-1"), addPod(t, w0, "local-2")
	remote1, remote2 := addPod(t, w1, "remote-1"), addPod(t, w1, "remote-2")

	const port = 8080
	cases := []struct {
		name       string
		backends   []*lab.Namespace
		addrs      []netip.AddrPort
		wantSource netip.Addr
	}{
		{"same node", []*lab.Namespace{local1.Namespace, local2.Namespace},
			[]netip.AddrPort{netip.AddrPortFrom(local1.IP, port), netip.AddrPortFrom(local2.IP, port)},
			client.IP},
		{"other node", []*lab.Namespace{remote1.Namespace, remote2.Namespace},
			[]netip.AddrPort{netip.AddrPortFrom(remote1.IP, port),
				netip.AddrPortFrom(remote2.IP, port)},
			client.IP},
		{"outside cluster", []*lab.Namespace{l.VPC, l.VPC},
			[]netip.AddrPort{netip.AddrPortFrom(lab.OutsideHostIP, 7001),
				netip.AddrPortFrom(lab.OutsideHostIP, 7002)},
			w0.IP},
	}
	vip := netip.MustParseAddrPort("10.32.0.50:80")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for i, ns := range tc.backends {
				r, err := ns.StartPeerReporter("tcp", tc.addrs[i])
				if err != nil {
					t.Fatalf("start backend %s: %v", tc.addrs[i], err)
				}
				defer r.Close()
			}
			if err := w0.AddServiceDNAT(context.Background(), vip, tc.addrs...); err != nil {
				t.Fatalf("add Service DNAT: %v", err)
			}

			failures := 0
			for i := 0; i < 200; i++ {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				peer, err := client.QueryPeerReporter(ctx, "tcp", vip)
				cancel()
				if err != nil {
					failures++
					if failures <= 3 {
						t.Errorf("connection %d to %s: %v", i, vip, err)
					}
					continue
				}
				if peer.Addr() != tc.wantSource {
					t.Errorf("connection %d: backend saw source %s, expected %s", i,
						peer.Addr(), tc.wantSource)
				}
			}
			if failures > 0 {
				t.Errorf("%d of 200 connections to %s failed", failures, vip)
			}
		})
	}
}

// TestFerrySpoofDropped sends from a pod with another source IP and then another MAC.
func TestFerrySpoofDropped(t *testing.T) {
	l, _ := newFerryLab(t, lab.CheckNodes()[:2], lab.FerryOptions{})
	w0 := l.Node("worker-0")
	a := addPod(t, w0, "pod-a")
	b := addPod(t, l.Node("worker-1"), "pod-b")
	ctx := context.Background()
	ping(t, a, b.IP, 1)

	before := counters(t, w0)
	if out, err := a.Run(ctx, "ip", "addr", "add", "10.200.0.99/24", "dev", "eth0"); err != nil {
		t.Fatalf("add second address: %v\n%s", err, out)
	}
	out, err := a.Run(ctx, "ping", "-n", "-c", "2", "-i", "0.2", "-W", "1", "-I", "10.200.0.99",
		b.IP.String())
	if err == nil {
		t.Errorf("ping from a spoofed source got replies:\n%s", out)
	}
	after := counters(t, w0)
	if after["drop-spoofed-ip"] <= before["drop-spoofed-ip"] {
		t.Errorf("drop-spoofed-ip stayed at %d", after["drop-spoofed-ip"])
	}

	if out, err := a.Run(ctx, "ip", "link", "set", "dev", "eth0", "address",
		"02:00:00:00:00:99"); err != nil {
		t.Fatalf("change MAC: %v\n%s", err, out)
	}
	pingFails(t, a, b.IP)
	final := counters(t, w0)
	if final["drop-spoofed-mac"] <= after["drop-spoofed-mac"] {
		t.Errorf("drop-spoofed-mac stayed at %d", final["drop-spoofed-mac"])
	}
}

// TestFerryCrossNodeBulk moves a TCP stream of full-size segments between pods on two
// nodes in both directions. Pods send GSO packets much larger than the MTU, which the
// forwarding path must hand to the uplink whole.
func TestFerryCrossNodeBulk(t *testing.T) {
	l, _ := newFerryLab(t, lab.CheckNodes()[:2], lab.FerryOptions{})
	a := addPod(t, l.Node("worker-0"), "pod-a")
	b := addPod(t, l.Node("worker-1"), "pod-b")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	server, err := b.Start(ctx, "iperf3", "--server", "--one-off", "--bind", b.IP.String())
	if err != nil {
		t.Fatalf("start iperf3 server in pod-b: %v", err)
	}
	defer server.Stop()
	time.Sleep(300 * time.Millisecond)

	// 20 MB each way; without segment-wise MTU checks the first GSO packet never passes.
	out, err := a.Run(ctx, "iperf3", "--client", b.IP.String(), "--bytes", "20M",
		"--bidir", "--connect-timeout", "3000")
	if err != nil {
		t.Fatalf("iperf3 from pod-a to pod-b: %v\n%s", err, out)
	}
	if !strings.Contains(out, "receiver") {
		t.Errorf("iperf3 output has no receiver summary:\n%s", out)
	}
	if c := counters(t, l.Node("worker-0")); c["drop-fib-lookup"] != 0 {
		t.Errorf("worker-0 dropped %d packets at the FIB lookup", c["drop-fib-lookup"])
	}
}
