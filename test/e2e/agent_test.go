package e2e

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferrynet/ferry/test/lab"
)

// waitFor polls cond every 100 ms until it holds or timeout passes.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return cond()
}

// TestFerrydReload adds a node to worker-0's configuration and removes it again, each
// time with SIGHUP, and checks that ferryd applies it without a restart.
func TestFerrydReload(t *testing.T) {
	nodes := append(lab.CheckNodes()[:2], lab.NodeSpec{Name: "worker-3",
		IP: netip.MustParseAddr("10.0.1.22"), PodCIDR: netip.MustParsePrefix("10.200.3.0/24")})
	l, opts := newFerryLab(t, nodes, lab.FerryOptions{Nodes: []string{"worker-0", "worker-1"}})
	w0, w3 := l.Node("worker-0"), l.Node("worker-3")
	a := addPod(t, w0, "pod-a")
	d := addPod(t, w3, "pod-d")
	d3 := netip.MustParsePrefix("10.200.3.0/24")
	ctx := context.Background()

	if _, ok := nodeRoutes(t, w0)[d3]; ok {
		t.Fatalf("worker-0 routes %s before it is configured", d3)
	}
	pingFails(t, a, d.IP)
	pid := w0.Ferryd().PID

	opts.Nodes = nil
	if err := w0.WriteFerrydConfig(opts); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		t.Fatalf("send SIGHUP to ferryd: %v", err)
	}
	if !waitFor(10*time.Second, func() bool { return nodeRoutes(t, w0)[d3] == w3.IP }) {
		t.Fatalf("worker-0 has no route %s via %s after SIGHUP: %v", d3, w3.IP, nodeRoutes(t, w0))
	}
	if _, ttl := ping(t, a, d.IP, 3); ttl != 62 {
		t.Errorf("pod-a to pod-d reply TTL %d, expected 62", ttl)
	}
	ping(t, w0, d.IP, 2)
	if w0.Ferryd().PID != pid {
		t.Errorf("ferryd restarted on SIGHUP: pid %d, was %d", w0.Ferryd().PID, pid)
	}

	opts.Nodes = []string{"worker-0", "worker-1"}
	if err := w0.WriteFerrydConfig(opts); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		t.Fatalf("send SIGHUP to ferryd: %v", err)
	}
	if !waitFor(10*time.Second, func() bool { _, ok := nodeRoutes(t, w0)[d3]; return !ok }) {
		t.Fatalf("worker-0 still routes %s after its node was removed", d3)
	}
	out, err := w0.Run(ctx, "ip", "route", "show", d3.String())
	if err != nil {
		t.Fatalf("ip route: %v", err)
	}
	if strings.TrimSpace(out) != "" {
		t.Errorf("worker-0 keeps the kernel route of a removed node: %s", out)
	}
	pingFails(t, a, d.IP)
}

// TestFerrydStopped stops ferryd on both nodes and checks that running and new traffic
// keeps flowing, and that the CNI plugin still adds and deletes pods.
func TestFerrydStopped(t *testing.T) {
	l, _ := newFerryLab(t, lab.CheckNodes()[:2], lab.FerryOptions{})
	w0, w1 := l.Node("worker-0"), l.Node("worker-1")
	a := addPod(t, w0, "pod-a")
	b := addPod(t, w1, "pod-b")
	ctx := context.Background()

	pinger, err := a.Start(ctx, "ping", "-n", "-c", "40", "-i", "0.05", b.IP.String())
	if err != nil {
		t.Fatalf("start ping: %v", err)
	}
	time.Sleep(300 * time.Millisecond)
	w0.StopFerryd()
	w1.StopFerryd()
	select {
	case <-pinger.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("ping did not finish")
	}
	if out := pinger.Output(); !strings.Contains(out, " 0% packet loss") {
		t.Errorf("ping across the ferryd stop lost packets:\n%s", out)
	}

	reporter, err := b.StartPeerReporter("tcp", netip.AddrPortFrom(b.IP, 7000))
	if err != nil {
		t.Fatalf("start reporter: %v", err)
	}
	defer reporter.Close()
	if peer := queryTCP(t, a.Namespace, netip.AddrPortFrom(b.IP, 7000)); peer.Addr() != a.IP {
		t.Errorf("pod-b saw %s, expected pod-a's %s", peer.Addr(), a.IP)
	}
	ext, err := l.Ext.StartPeerReporter("tcp", netip.AddrPortFrom(lab.InternetIP, 7000))
	if err != nil {
		t.Fatalf("start internet reporter: %v", err)
	}
	defer ext.Close()
	peer := queryTCP(t, a.Namespace, netip.AddrPortFrom(lab.InternetIP, 7000))
	if peer.Addr() != w0.IP {
		t.Errorf("internet host saw %s, expected worker-0's %s", peer.Addr(), w0.IP)
	}

	late := addPod(t, w0, "pod-late")
	ping(t, late, b.IP, 2)
	if err := w0.DelPod(ctx, late); err != nil {
		t.Errorf("delete pod with ferryd stopped: %v", err)
	}
	out, err := w0.Run(ctx, "ip", "-o", "link", "show")
	if err != nil {
		t.Fatalf("list links: %v", err)
	}
	if n := strings.Count(out, "@if"); n != 2 {
		t.Errorf("worker-0 has %d veths after deleting pod-late, expected 2 (eth0, pod-a):\n%s",
			n, out)
	}
}

// TestFerrydBadConfig starts ferryd with invalid files: each is rejected with a message that
// names the field, and nothing is changed on the node.
func TestFerrydBadConfig(t *testing.T) {
	lab.SkipUnlessPrivileged(t)
	l := lab.NewTest(t, lab.Options{Nodes: lab.CheckNodes()[:2]})
	n := l.Node("worker-0")
	good := string(n.FerrydConfig(lab.FerryOptions{BinDir: binDir}))

	cases := []struct {
		name, field string
		edit        func(string) string
	}{
		{"cluster CIDR", "clusterCIDR", func(s string) string {
			return strings.Replace(s, "clusterCIDR: 10.200.0.0/16", "clusterCIDR: 10.200.0.0/33", 1)
		}},
		{"pod CIDR outside cluster", "nodes[1].podCIDR", func(s string) string {
			return strings.Replace(s, "podCIDR: 10.200.1.0/24", "podCIDR: 10.99.1.0/24", 1)
		}},
		{"node missing", "nodeName", func(s string) string {
			return strings.Replace(s, "nodeName: worker-0", "nodeName: worker-9", 1)
		}},
		{"attach mode", "attachMode", func(s string) string {
			return strings.Replace(s, "attachMode: auto", "attachMode: fast", 1)
		}},
		{"unknown key", "colour", func(s string) string { return s + "colour: blue\n" }},
		{"node IP", "nodes[0].ip", func(s string) string {
			return strings.Replace(s, "ip: 10.0.1.20,", "ip: 10.0.1.300,", 1)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(n.StateDir, "bad.yaml")
			if err := os.WriteFile(path, []byte(tc.edit(good)), 0o644); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			out, err := n.Run(ctx, filepath.Join(binDir, "ferryd"), "--config", path)
			if err == nil {
				t.Fatalf("ferryd accepted the config:\n%s", out)
			}
			if !strings.Contains(out, tc.field) {
				t.Errorf("ferryd's message does not name %s:\n%s", tc.field, out)
			}
			if _, err := os.Stat(n.BPFFSDir()); !os.IsNotExist(err) {
				t.Errorf("ferryd created %s before rejecting the config", n.BPFFSDir())
			}
			if _, err := os.Stat(n.FerryConflistPath()); !os.IsNotExist(err) {
				t.Errorf("ferryd wrote %s before rejecting the config", n.FerryConflistPath())
			}
		})
	}
}
