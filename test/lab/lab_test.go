package lab_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferrynet/ferry/test/lab"
)

func nsExists(name string) bool {
	_, err := os.Stat(filepath.Join("/run/netns", name))
	return err == nil
}

// labNamespaces returns the entries of /run/netns that start with the lab's prefix.
func labNamespaces(t *testing.T, name string) []string {
	t.Helper()
	entries, err := os.ReadDir("/run/netns")
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("read /run/netns: %v", err)
	}
	var found []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), name+"-") {
			found = append(found, e.Name())
		}
	}
	return found
}

func readSysctl(t *testing.T, ns *lab.Namespace, key string) string {
	t.Helper()
	out, err := ns.Run(context.Background(), "cat", filepath.Join("/proc/sys", key))
	if err != nil {
		t.Fatalf("read sysctl %s in %s: %v", key, ns.NSName, err)
	}
	return strings.TrimSpace(out)
}

// pingTTL pings dst once from ns and returns the reply TTL.
func pingTTL(t *testing.T, ns *lab.Namespace, dst string) string {
	t.Helper()
	out, err := ns.Run(context.Background(), "ping", "-c", "1", "-W", "2", dst)
	if err != nil {
		t.Fatalf("ping %s from %s: %v", dst, ns.NSName, err)
	}
	_, after, found := strings.Cut(out, "ttl=")
	if !found {
		t.Fatalf("ping %s from %s: no ttl= in output %q", dst, ns.NSName, out)
	}
	return strings.Fields(after)[0]
}

func TestLabTopology(t *testing.T) {
	l := lab.NewTest(t, lab.Options{Nodes: lab.CheckNodes()})
	ctx := context.Background()
	w0, w1, w2 := l.Node("worker-0"), l.Node("worker-1"), l.Node("worker-2")

	t.Run("node names", func(t *testing.T) {
		if w0.NSName != l.Name+"-worker-0" {
			t.Errorf("worker-0 namespace is %s, expected %s-worker-0", w0.NSName, l.Name)
		}
		if l.VPC.NSName != l.Name+"-vpc" || l.Ext.NSName != l.Name+"-ext" {
			t.Errorf("vpc and ext namespaces are %s and %s", l.VPC.NSName, l.Ext.NSName)
		}
		wantDir := filepath.Join(lab.StateRoot, l.Name, "worker-0", "net.d")
		if w0.NetDir != wantDir {
			t.Errorf("worker-0 net.d is %s, expected %s", w0.NetDir, wantDir)
		}
		if st, err := os.Stat(w0.IPAMDir); err != nil || !st.IsDir() {
			t.Errorf("worker-0 IPAM dir %s missing: %v", w0.IPAMDir, err)
		}
		wantBPF := "/sys/fs/bpf/ferry-lab-" + l.Name + "-worker-0"
		if w0.BPFFSDir() != wantBPF {
			t.Errorf("worker-0 bpffs dir is %s, expected %s", w0.BPFFSDir(), wantBPF)
		}
	})

	t.Run("same subnet hides router", func(t *testing.T) {
		// A direct reply between two nodes of one subnet keeps TTL 64.
		if ttl := pingTTL(t, w0.Namespace, "10.0.1.21"); ttl != "64" {
			t.Errorf("reply TTL from worker-1 to worker-0 is %s, expected 64", ttl)
		}
	})

	t.Run("second subnet through router", func(t *testing.T) {
		if ttl := pingTTL(t, w0.Namespace, "10.0.2.20"); ttl != "63" {
			t.Errorf("reply TTL from worker-2 to worker-0 is %s, expected 63", ttl)
		}
	})

	t.Run("router settings", func(t *testing.T) {
		for _, key := range []string{
			"net/ipv4/conf/all/send_redirects",
			"net/ipv4/conf/default/send_redirects",
			"net/ipv4/conf/br0/send_redirects",
			"net/ipv4/conf/br1/send_redirects",
			"net/ipv4/conf/n0/send_redirects",
			"net/ipv4/conf/ext0/send_redirects",
		} {
			if v := readSysctl(t, l.VPC, key); v != "0" {
				t.Errorf("vpc %s is %s, expected 0", key, v)
			}
		}
		if v := readSysctl(t, l.VPC, "net/ipv4/ip_forward"); v != "1" {
			t.Errorf("vpc ip_forward is %s, expected 1", v)
		}
		if v := readSysctl(t, w2.Namespace, "net/ipv4/conf/eth0/rp_filter"); v != "0" {
			t.Errorf("worker-2 eth0 rp_filter is %s, expected 0", v)
		}
		out, err := l.VPC.Run(ctx, "ip", "-4", "addr", "show", "dev", "br0")
		if err != nil {
			t.Fatalf("show br0 addresses: %v", err)
		}
		for _, want := range []string{"10.0.1.1/24", "10.0.1.10/24"} {
			if !strings.Contains(out, want) {
				t.Errorf("br0 in vpc lacks %s:\n%s", want, out)
			}
		}
	})

	t.Run("ext routes only to nodes", func(t *testing.T) {
		out, err := l.Ext.Run(ctx, "ip", "route")
		if err != nil {
			t.Fatalf("ip route in ext: %v", err)
		}
		if strings.Contains(out, "default") {
			t.Errorf("ext has a default route:\n%s", out)
		}
		for _, want := range []string{"10.0.1.0/24 via 198.51.100.1",
			"10.0.2.0/24 via 198.51.100.1"} {
			if !strings.Contains(out, want) {
				t.Errorf("ext lacks route %q:\n%s", want, out)
			}
		}
	})

	t.Run("peer reporter tcp and udp", func(t *testing.T) {
		for _, network := range []string{"tcp", "udp"} {
			addr := netip.MustParseAddrPort("0.0.0.0:7100")
			r, err := w0.StartPeerReporter(network, addr)
			if err != nil {
				t.Fatalf("start %s reporter: %v", network, err)
			}
			seen, err := w1.QueryPeerReporter(ctx, network,
				netip.MustParseAddrPort("10.0.1.20:7100"))
			if err != nil {
				t.Fatalf("query %s reporter: %v", network, err)
			}
			if seen.Addr() != w1.IP {
				t.Errorf("%s reporter saw %v, expected %v", network, seen, w1.IP)
			}
			if got := r.Received(); got != 1 {
				t.Errorf("%s reporter received %d queries, expected 1", network, got)
			}
			r.Close()
		}
		dst := netip.AddrPortFrom(lab.InternetIP, 7101)
		if _, err := l.Ext.StartPeerReporter("tcp", dst); err != nil {
			t.Fatalf("start reporter in ext: %v", err)
		}
		seen, err := w2.QueryPeerReporter(ctx, "tcp", dst)
		if err != nil {
			t.Fatalf("query ext reporter from worker-2: %v", err)
		}
		if seen.Addr() != w2.IP {
			t.Errorf("ext saw %v from worker-2, expected %v", seen, w2.IP)
		}
	})

	t.Run("cloud routes", func(t *testing.T) {
		if err := l.AddCloudRoute(w1); err != nil {
			t.Fatalf("add cloud route: %v", err)
		}
		if err := l.AddCloudRoute(w1); err != nil {
			t.Errorf("add cloud route a second time: %v", err)
		}
		out, err := l.VPC.Run(ctx, "ip", "route")
		if err != nil {
			t.Fatalf("ip route in vpc: %v", err)
		}
		if !strings.Contains(out, "10.200.1.0/24 via 10.0.1.21 dev br0") {
			t.Errorf("vpc lacks the cloud route of worker-1:\n%s", out)
		}
		if err := l.DelCloudRoute(w1); err != nil {
			t.Fatalf("delete cloud route: %v", err)
		}
		out, _ = l.VPC.Run(ctx, "ip", "route")
		if strings.Contains(out, "10.200.1.0/24") {
			t.Errorf("vpc keeps the cloud route of worker-1 after DelCloudRoute:\n%s", out)
		}
		if err := l.DelCloudRoute(w1); err != nil {
			t.Errorf("delete a missing cloud route: %v", err)
		}
	})

	t.Run("bpffs stays visible", func(t *testing.T) {
		if _, err := os.Stat("/sys/fs/bpf"); err != nil {
			t.Skip("skipping: /sys/fs/bpf does not exist on this host")
		}
		hostOut, _ := exec.Command("ls", "/sys/fs/bpf").CombinedOutput()
		out, err := w0.Run(ctx, "ls", "/sys/fs/bpf")
		if err != nil {
			t.Fatalf("ls /sys/fs/bpf in worker-0: %v", err)
		}
		if out != string(hostOut) {
			t.Errorf("worker-0 sees /sys/fs/bpf as %q, the host as %q", out, hostOut)
		}
	})
}

func TestServiceDNATBalances(t *testing.T) {
	l := lab.NewTest(t, lab.Options{Nodes: lab.CheckNodes()[:1]})
	ctx := context.Background()
	n := l.Node("worker-0")
	vip := netip.MustParseAddrPort("10.32.0.1:443")
	backends := []netip.AddrPort{
		netip.AddrPortFrom(lab.OutsideHostIP, 6443),
		netip.AddrPortFrom(lab.OutsideHostIP, 6444),
	}
	var reporters []*lab.PeerReporter
	for _, b := range backends {
		r, err := l.VPC.StartPeerReporter("tcp", b)
		if err != nil {
			t.Fatalf("start backend %v: %v", b, err)
		}
		reporters = append(reporters, r)
	}
	if err := n.AddServiceDNAT(ctx, vip, backends...); err != nil {
		t.Fatalf("add service: %v", err)
	}

	// Each of 40 connections picks a backend with chance 1/2, so both get some unless
	// something is wrong: the chance that one gets none is 2^-39.
	const queries = 40
	for i := range queries {
		seen, err := n.QueryPeerReporter(ctx, "tcp", vip)
		if err != nil {
			t.Fatalf("query %d to %v from the node: %v", i, vip, err)
		}
		if seen.Addr() != n.IP {
			t.Fatalf("backend saw source %v, expected %v", seen, n.IP)
		}
	}
	first, second := reporters[0].Received(), reporters[1].Received()
	if first+second != queries {
		t.Errorf("backends received %d and %d connections, expected %d in total", first,
			second, queries)
	}
	if first == 0 || second == 0 {
		t.Errorf("backends received %d and %d connections, expected both above 0", first,
			second)
	}

	// Adding the service again replaces the backends.
	if err := n.AddServiceDNAT(ctx, vip, backends[1]); err != nil {
		t.Fatalf("replace backends: %v", err)
	}
	before := reporters[1].Received()
	for range 5 {
		if _, err := n.QueryPeerReporter(ctx, "tcp", vip); err != nil {
			t.Fatalf("query %v after replacing backends: %v", vip, err)
		}
	}
	if got := reporters[1].Received() - before; got != 5 {
		t.Errorf("the remaining backend received %d of 5 connections", got)
	}

	if err := n.DelServiceDNAT(ctx, vip); err != nil {
		t.Fatalf("delete service: %v", err)
	}
	out, err := n.Run(ctx, "iptables", "-t", "nat", "-S")
	if err != nil {
		t.Fatalf("list nat rules: %v", err)
	}
	if strings.Contains(out, "10.32.0.1") || strings.Contains(out, "LAB-SVC") {
		t.Errorf("nat table keeps service rules after DelServiceDNAT:\n%s", out)
	}
}

// startedProcess starts "sleep 300" in ns and returns it.
func startedProcess(t *testing.T, ns *lab.Namespace) *lab.Process {
	t.Helper()
	p, err := ns.Start(context.Background(), "sleep", "300")
	if err != nil {
		t.Fatalf("start sleep in %s: %v", ns.NSName, err)
	}
	return p
}

func waitExit(t *testing.T, p *lab.Process) {
	t.Helper()
	select {
	case <-p.Done():
	case <-time.After(10 * time.Second):
		t.Errorf("process %d still runs 10 s after teardown", p.PID)
	}
}

// makeBPFFSDir creates the bpffs directory of a node, as a dataplane agent would.
func makeBPFFSDir(t *testing.T, n *lab.Node) bool {
	t.Helper()
	if err := os.Mkdir(n.BPFFSDir(), 0o755); err != nil {
		t.Logf("not checking bpffs cleanup: create %s: %v", n.BPFFSDir(), err)
		return false
	}
	return true
}

func assertGone(t *testing.T, name string, bpffsDir string) {
	t.Helper()
	if left := labNamespaces(t, name); len(left) > 0 {
		t.Errorf("namespaces of lab %s remain: %v", name, left)
	}
	if _, err := os.Stat(filepath.Join(lab.StateRoot, name)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state dir of lab %s remains (stat: %v)", name, err)
	}
	if bpffsDir != "" {
		if _, err := os.Stat(bpffsDir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("bpffs dir %s remains (stat: %v)", bpffsDir, err)
		}
	}
}

func TestLabCloseRemovesEverything(t *testing.T) {
	lab.SkipUnlessPrivileged(t)
	ctx := context.Background()
	l, err := lab.New(ctx, lab.Options{Nodes: lab.CheckNodes()[:2], Logf: t.Logf})
	if err != nil {
		t.Fatalf("build lab: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	n := l.Node("worker-0")
	p := startedProcess(t, n.Namespace)
	ctxProcess, cancel := context.WithCancel(ctx)
	short, err := l.Node("worker-1").Start(ctxProcess, "sleep", "300")
	if err != nil {
		t.Fatalf("start sleep in worker-1: %v", err)
	}
	if _, err := l.VPC.StartPeerReporter("tcp", netip.MustParseAddrPort("10.0.1.1:7200")); err != nil {
		t.Fatalf("start reporter: %v", err)
	}
	bpffsDir := ""
	if makeBPFFSDir(t, n) {
		bpffsDir = n.BPFFSDir()
	}
	if got := len(labNamespaces(t, l.Name)); got != 4 {
		t.Errorf("lab has %d namespaces, expected 4 (vpc, ext, 2 nodes)", got)
	}

	cancel()
	waitExit(t, short)

	if err := l.Close(); err != nil {
		t.Fatalf("close lab: %v", err)
	}
	waitExit(t, p)
	assertGone(t, l.Name, bpffsDir)
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := n.AddPod(ctx, "late", []byte(`{}`)); err == nil {
		t.Errorf("AddPod on a closed lab succeeded, expected an error")
	}
}

// deadPID returns the pid of a process that has exited.
func deadPID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatalf("run true: %v", err)
	}
	return cmd.Process.Pid
}

// crash makes a lab look as if its owner died: the pid file names a dead process.
func crash(t *testing.T, l *lab.Lab) {
	t.Helper()
	owner := fmt.Sprintf("%d 1\n", deadPID(t))
	if err := os.WriteFile(filepath.Join(l.Dir, "pid"), []byte(owner), 0o644); err != nil {
		t.Fatalf("overwrite owner of lab %s: %v", l.Name, err)
	}
}

func TestNewRemovesCrashedLab(t *testing.T) {
	lab.SkipUnlessPrivileged(t)
	ctx := context.Background()
	crashed, err := lab.New(ctx, lab.Options{Nodes: lab.CheckNodes()[:1], Logf: t.Logf})
	if err != nil {
		t.Fatalf("build first lab: %v", err)
	}
	p := startedProcess(t, crashed.Node("worker-0").Namespace)
	bpffsDir := ""
	if makeBPFFSDir(t, crashed.Node("worker-0")) {
		bpffsDir = crashed.Node("worker-0").BPFFSDir()
	}
	crash(t, crashed)
	name := crashed.Name
	crashed = nil // drop the handle, as a crashed process would

	next := lab.NewTest(t, lab.Options{Nodes: lab.CheckNodes()[:1]})
	waitExit(t, p)
	assertGone(t, name, bpffsDir)
	if got := len(labNamespaces(t, next.Name)); got != 3 {
		t.Errorf("new lab has %d namespaces, expected 3", got)
	}
}

func TestDetachedLabSurvivesNew(t *testing.T) {
	lab.SkipUnlessPrivileged(t)
	ctx := context.Background()
	detached, err := lab.New(ctx, lab.Options{Nodes: lab.CheckNodes()[:1], Detached: true})
	if err != nil {
		t.Fatalf("build detached lab: %v", err)
	}
	t.Cleanup(func() { lab.Remove(detached.Name, true) })
	crash(t, detached)

	lab.NewTest(t, lab.Options{})
	if got := len(labNamespaces(t, detached.Name)); got != 3 {
		t.Fatalf("detached lab has %d namespaces after New, expected 3", got)
	}

	infos, err := lab.List()
	if err != nil {
		t.Fatalf("list labs: %v", err)
	}
	found := false
	for _, info := range infos {
		if info.Name == detached.Name {
			found = true
			if !info.Detached || info.OwnerAlive {
				t.Errorf("lab %s listed as detached=%v ownerAlive=%v, expected true, false",
					info.Name, info.Detached, info.OwnerAlive)
			}
		}
	}
	if !found {
		t.Errorf("List does not show lab %s", detached.Name)
	}

	// Clean removes every detached lab whose owner is gone, such as one that a user made
	// with ferrylab up, so it runs only when this test's lab is the only one.
	for _, info := range infos {
		if info.Detached && info.Name != detached.Name {
			t.Skipf("not running Clean: it would remove lab %s of someone else too", info.Name)
		}
	}
	removed, err := lab.Clean(t.Logf)
	if err != nil {
		t.Fatalf("clean: %v", err)
	}
	if !containsString(removed, detached.Name) {
		t.Errorf("Clean removed %v, expected it to include %s", removed, detached.Name)
	}
	assertGone(t, detached.Name, "")
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// startTime returns field 22 of /proc/<pid>/stat.
func startTime(t *testing.T, pid int) string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatalf("read stat of pid %d: %v", pid, err)
	}
	s := string(data)
	return strings.Fields(s[strings.LastIndexByte(s, ')')+1:])[19]
}

func TestRemoveRejectsLiveOwner(t *testing.T) {
	l := lab.NewTest(t, lab.Options{})

	// Hand the lab to another running process.
	owner := exec.Command("sleep", "60")
	if err := owner.Start(); err != nil {
		t.Fatalf("start sleep: %v", err)
	}
	t.Cleanup(func() {
		owner.Process.Kill()
		owner.Wait()
	})
	pid := owner.Process.Pid
	content := fmt.Sprintf("%d %s\n", pid, startTime(t, pid))
	if err := os.WriteFile(filepath.Join(l.Dir, "pid"), []byte(content), 0o644); err != nil {
		t.Fatalf("write owner of lab %s: %v", l.Name, err)
	}

	if err := lab.Remove(l.Name, false); err == nil {
		t.Fatalf("Remove of a lab with a live owner succeeded, expected an error")
	}
	if got := len(labNamespaces(t, l.Name)); got != 2 {
		t.Errorf("lab has %d namespaces after a rejected Remove, expected 2", got)
	}
	if err := lab.Remove(l.Name, true); err != nil {
		t.Fatalf("forced Remove: %v", err)
	}
	assertGone(t, l.Name, "")
	if err := lab.Remove(l.Name, false); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Remove of a missing lab returned %v, expected os.ErrNotExist", err)
	}
	if err := lab.Remove("../etc", true); err == nil {
		t.Errorf("Remove with an invalid name succeeded, expected an error")
	}
}

func TestTwoLabsInARow(t *testing.T) {
	lab.SkipUnlessPrivileged(t)
	var names []string
	for i := range 2 {
		t.Run(fmt.Sprintf("lab %d", i), func(t *testing.T) {
			l := lab.NewTest(t, lab.Options{Nodes: lab.CheckNodes()[:2]})
			names = append(names, l.Name)
			if ttl := pingTTL(t, l.Node("worker-0").Namespace, "10.0.1.21"); ttl != "64" {
				t.Errorf("reply TTL from worker-1 is %s, expected 64", ttl)
			}
		})
	}
	for _, name := range names {
		assertGone(t, name, "")
	}
}
