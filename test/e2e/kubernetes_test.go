package e2e

import (
	"context"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferrynet/ferry/pkg/nodesource/nodesourcetest"
	"github.com/ferrynet/ferry/test/lab"
)

// apiServerAddr is where each node's namespace serves the Kubernetes API of the test, on its
// own loopback: the lab's traffic stays inside its namespaces.
const apiServerAddr = "127.0.0.1:6443"

// changeTimeout bounds the wait for a node change to reach a node's maps. ferryd applies a
// change within a second; the rest is room for a busy machine, and the test logs the time.
const changeTimeout = 5 * time.Second

// TestFerrydKubernetesSource runs ferryd on two nodes with the Kubernetes node source: the
// real ferryd binary reads a kubeconfig and watches Node objects over HTTP, served by a
// stand-in for kube-apiserver inside each node's namespace. Pods of the two nodes reach each
// other through the ranges of the Node objects, and a node that is added, re-addressed and
// deleted in the API changes the node routes map and the kernel routes of the other nodes.
func TestFerrydKubernetesSource(t *testing.T) {
	lab.SkipUnlessPrivileged(t)
	lab.SkipWithoutPlugins(t, []string{"/usr/lib/cni"}, "host-local", "loopback")
	l := lab.NewTest(t, lab.Options{Nodes: lab.CheckNodes()[:2],
		CNIBinDirs: []string{binDir, "/usr/lib/cni"}})
	w0, w1 := l.Node("worker-0"), l.Node("worker-1")
	ctx := context.Background()

	api := nodesourcetest.NewAPIServer()
	t.Cleanup(func() { api.Close() })
	for _, n := range l.Nodes {
		api.Put(nodesourcetest.Node(n.Name, n.IP, n.PodCIDR))
		var listener net.Listener
		err := n.Do(func() error {
			var err error
			listener, err = net.Listen("tcp", apiServerAddr)
			return err
		})
		if err != nil {
			t.Fatalf("listen on %s in %s: %v", apiServerAddr, n.Name, err)
		}
		api.Serve(listener)
	}
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := nodesourcetest.WriteKubeconfig(kubeconfig, apiServerAddr); err != nil {
		t.Fatal(err)
	}
	opts := lab.FerryOptions{BinDir: binDir, Kubeconfig: kubeconfig}
	if err := l.SetupFerry(ctx, opts); err != nil {
		t.Fatalf("set up ferry with the Kubernetes node source: %v", err)
	}

	// Each node's own pod range, from its Node object, is the range of its pods.
	a := addPod(t, w0, "pod-a")
	b := addPod(t, w1, "pod-b")
	for _, p := range []*lab.Pod{a, b} {
		if !p.Node.PodCIDR.Contains(p.IP) {
			t.Errorf("pod %s got %s, outside its node's podCIDR %s", p.Name, p.IP,
				p.Node.PodCIDR)
		}
	}
	ping(t, a, b.IP, 3)
	ping(t, b, a.IP, 3)

	// A node that joins, moves to another address and leaves.
	name := "worker-9"
	podCIDR := netip.MustParsePrefix("10.200.9.0/24")
	steps := []struct {
		change string
		ip     netip.Addr // invalid: the node is deleted
	}{
		{"added", netip.MustParseAddr("10.0.1.99")},
		{"re-addressed", netip.MustParseAddr("10.0.1.98")},
		{"deleted", netip.Addr{}},
	}
	for _, step := range steps {
		start := time.Now()
		if step.ip.IsValid() {
			api.Put(nodesourcetest.Node(name, step.ip, podCIDR))
		} else {
			api.Delete(name)
		}
		for _, n := range []*lab.Node{w0, w1} {
			waitNodeRoute(t, n, podCIDR, step.ip, name+" "+step.change)
			t.Logf("%s %s: node routes map of %s changed after %s", name, step.change, n.Name,
				time.Since(start).Round(time.Millisecond))
			route, err := n.Run(ctx, "ip", "-4", "route", "show", podCIDR.String())
			if err != nil {
				t.Fatalf("list routes of %s: %v", n.Name, err)
			}
			got := strings.TrimSpace(route)
			if step.ip.IsValid() && !strings.Contains(got, "via "+step.ip.String()) ||
				!step.ip.IsValid() && got != "" {
				t.Errorf("%s %s: kernel route to %s on %s is %q, want one via %v", name,
					step.change, podCIDR, n.Name, got, step.ip)
			}
		}
	}
	ping(t, a, b.IP, 2)
	reqs := api.Requests()
	t.Logf("API server requests: %v", reqs)
	if reqs["watch"] < 2 {
		t.Errorf("API server answered %v: want a watch from each ferryd", reqs)
	}
}

// waitNodeRoute waits until n's node routes map sends podCIDR to nodeIP, or holds no entry
// for podCIDR when nodeIP is invalid. change names the change that the map must show.
func waitNodeRoute(t *testing.T, n *lab.Node, podCIDR netip.Prefix, nodeIP netip.Addr,
	change string) {
	t.Helper()
	deadline := time.Now().Add(changeTimeout)
	for {
		got, found := nodeRoutes(t, n)[podCIDR]
		if nodeIP.IsValid() && got == nodeIP || !nodeIP.IsValid() && !found {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s after it, the node routes map of %s has %s -> %v (present: "+
				"%v), want %v", change, changeTimeout, n.Name, podCIDR, got, found, nodeIP)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
