package containerd_test

import (
	"bytes"
	"context"
	"debug/elf"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/ferrynet/ferry/pkg/cni"
	"github.com/ferrynet/ferry/pkg/datapath"
	"github.com/ferrynet/ferry/test/containerd"
	"github.com/ferrynet/ferry/test/lab"
)

// Local image names: no registry is reachable, so the test imports both images.
const (
	sandboxImage = "ferry.test/pause:1"
	busyboxImage = "ferry.test/busybox:1"
)

// busyboxPath is where Debian's busybox-static installs its binary.
const busyboxPath = "/bin/busybox"

// readyWait bounds the wait for containerd to load a CNI configuration that ferryd wrote.
const readyWait = 30 * time.Second

// TestContainerdPods runs pods with containerd and runc on two lab nodes through the CRI
// API, as kubelet does, with ferryd installing the plugin and writing the CNI configuration.
func TestContainerdPods(t *testing.T) {
	lab.SkipUnlessPrivileged(t)
	containerd.SkipUnlessAvailable(t)
	lab.SkipWithoutPlugins(t, []string{"/usr/lib/cni"}, "host-local", "loopback")
	skipWithoutStaticBusybox(t)
	if removed, err := containerd.CleanStale(); err != nil {
		t.Fatalf("clean up containerd runtimes of earlier runs: %v", err)
	} else if len(removed) > 0 {
		t.Logf("removed containerd runtimes of earlier runs: %v", removed)
	}

	ctx := context.Background()
	archives := buildImages(t)
	l := lab.NewTest(t, lab.Options{Nodes: lab.CheckNodes()[:2]})
	nodes := l.Nodes
	runtimes := make([]*containerd.Runtime, len(nodes))
	cniBins := make([]string, len(nodes))
	for i, n := range nodes {
		cniBins[i] = newCNIBinDir(t, n)
		runtimes[i] = startRuntime(t, n, cniBins[i], archives)
	}

	// 1. Without ferry's CNI configuration the runtime reports the network not ready.
	for i, rt := range runtimes {
		ready, reason := networkReady(t, rt)
		if ready {
			t.Errorf("%s: NetworkReady is true before ferryd wrote its configuration",
				nodes[i].Name)
		}
		t.Logf("%s before ferryd: NetworkReady false: %s", nodes[i].Name, reason)
	}

	for i, n := range nodes {
		startFerryd(t, n, cniBins[i])
		assertPluginInstalled(t, cniBins[i])
	}
	for i, rt := range runtimes {
		waitNetworkReady(t, nodes[i], rt)
	}

	// 2. One pod per node, each with an address of its node's range.
	pods := make([]*containerd.Pod, len(nodes))
	for i, rt := range runtimes {
		pod, err := rt.RunPod(ctx, "pod-"+nodes[i].Name)
		if err != nil {
			t.Fatalf("%v\ncontainerd log:\n%s", err, rt.Output())
		}
		pods[i] = pod
		if !nodes[i].PodCIDR.Contains(pod.IP) {
			t.Errorf("pod %s has IP %s, outside %s of %s", pod.Name, pod.IP,
				nodes[i].PodCIDR, nodes[i].Name)
		}
		t.Logf("pod %s on %s: IP %s, netns %s", pod.Name, nodes[i].Name, pod.IP,
			pod.NetNSPath)
		assertPodNetwork(t, nodes[i], pod)
	}
	if pods[0].IP == pods[1].IP {
		t.Errorf("both pods have IP %s", pods[0].IP)
	}

	// 3. A busybox container in each pod: pod to pod, and pod to the internet.
	for _, pod := range pods {
		if err := pod.StartContainer(ctx, busyboxImage, "/bin/sleep", "3600"); err != nil {
			t.Fatal(err)
		}
		// The listener replies to every connection with "pong from <pod name>".
		mustExec(t, pod, "sh", "-c", "nc -ll -p 8080 -e /bin/echo pong from "+pod.Name+
			" </dev/null >/dev/null 2>&1 &")
	}
	assertPodsConnected(t, pods)

	reporter, err := l.Ext.StartPeerReporter("tcp", netip.AddrPortFrom(lab.InternetIP, 7000))
	if err != nil {
		t.Fatalf("start peer reporter in ext: %v", err)
	}
	out := mustExec(t, pods[0], "nc", "-w", "5", lab.InternetIP.String(), "7000")
	seen, err := netip.ParseAddrPort(strings.TrimSpace(out))
	switch {
	case err != nil:
		t.Errorf("pod %s to %s: reply %q is no address: %v", pods[0].Name, reporter.Addr, out,
			err)
	case seen.Addr() != nodes[0].IP:
		t.Errorf("%s saw pod %s's connection from %s, want node IP %s (masquerade)",
			reporter.Addr, pods[0].Name, seen.Addr(), nodes[0].IP)
	}

	// 4. Restarting containerd leaves the running pods and their network alone.
	for i, rt := range runtimes {
		if err := rt.Restart(ctx); err != nil {
			t.Fatalf("restart containerd on %s: %v", nodes[i].Name, err)
		}
		waitNetworkReady(t, nodes[i], rt)
	}
	for i, pod := range pods {
		status, err := pod.Status(ctx)
		if err != nil {
			t.Fatalf("after the restart: %v", err)
		}
		if status.State != runtimeapi.PodSandboxState_SANDBOX_READY {
			t.Errorf("pod %s is %s after the restart, want SANDBOX_READY", pod.Name,
				status.State)
		}
		if got := status.GetNetwork().GetIp(); got != pod.IP.String() {
			t.Errorf("pod %s has IP %q after the restart, want %s", pod.Name, got, pod.IP)
		}
		assertPodNetwork(t, nodes[i], pod)
	}
	assertPodsConnected(t, pods)

	// 5. Removing the pods removes their network.
	for i, pod := range pods {
		if err := pod.Remove(ctx); err != nil {
			t.Fatalf("%v\ncontainerd log:\n%s", err, runtimes[i].Output())
		}
		assertPodNetworkGone(t, nodes[i], pod)
	}
}

// skipWithoutStaticBusybox skips the test unless busyboxPath is a static executable, which
// the busybox image needs because it contains no libraries.
func skipWithoutStaticBusybox(t *testing.T) {
	t.Helper()
	f, err := elf.Open(busyboxPath)
	if err != nil {
		t.Skipf("containerd tests need a static busybox at %s (%v); install busybox-static",
			busyboxPath, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Skipf("containerd tests need a static busybox, and %s is dynamically linked; "+
				"install busybox-static", busyboxPath)
		}
	}
}

// buildImages writes the sandbox and busybox images as OCI archives and returns their paths.
func buildImages(t *testing.T) []string {
	t.Helper()
	pause, err := containerd.PauseImage(sandboxImage, filepath.Join(binDir, "pause"))
	if err != nil {
		t.Fatal(err)
	}
	busybox, err := containerd.BusyboxImage(busyboxImage, busyboxPath)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var paths []string
	for _, img := range []containerd.Image{pause, busybox} {
		path := filepath.Join(dir, strings.NewReplacer("/", "_", ":", "_").Replace(img.Name)+
			".tar")
		if err := containerd.WriteOCIArchive(path, img); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, path)
	}
	return paths
}

// newCNIBinDir creates the node's CNI plugin directory with links to Debian's host-local
// and loopback. ferryd installs the ferry plugin into it.
func newCNIBinDir(t *testing.T, n *lab.Node) string {
	t.Helper()
	dir := filepath.Join(n.StateDir, "cni-bin")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("create CNI bin dir: %v", err)
	}
	for _, plugin := range []string{"host-local", "loopback"} {
		if err := os.Symlink(filepath.Join("/usr/lib/cni", plugin),
			filepath.Join(dir, plugin)); err != nil {
			t.Fatalf("link CNI plugin %s: %v", plugin, err)
		}
	}
	return dir
}

// startRuntime starts containerd on n, imports the images and removes everything in
// t.Cleanup, also when the test fails.
func startRuntime(t *testing.T, n *lab.Node, cniBin string, archives []string) *containerd.Runtime {
	t.Helper()
	ctx := context.Background()
	rt, err := containerd.Start(ctx, n, containerd.Options{
		CNIBinDir:    cniBin,
		CNIConfDir:   n.NetDir,
		SandboxImage: sandboxImage,
	})
	if err != nil {
		t.Fatalf("start containerd on %s: %v", n.Name, err)
	}
	t.Cleanup(func() {
		if err := rt.Close(); err != nil {
			t.Errorf("%v", err)
		}
	})
	for _, archive := range archives {
		if err := rt.Import(ctx, archive); err != nil {
			t.Fatal(err)
		}
	}
	return rt
}

// startFerryd starts ferryd on n with the lab's configuration, except that it installs the
// plugin into cniBin, containerd's CNI bin dir.
func startFerryd(t *testing.T, n *lab.Node, cniBin string) {
	t.Helper()
	opts := lab.FerryOptions{BinDir: binDir}
	config := string(n.FerrydConfig(opts))
	binDirLine := "  binDir: " + binDir + "\n"
	if !strings.Contains(config, binDirLine) {
		t.Fatalf("ferryd config of %s has no line %q:\n%s", n.Name, binDirLine, config)
	}
	config = strings.Replace(config, binDirLine, "  binDir: "+cniBin+"\n", 1)
	if err := os.WriteFile(n.FerrydConfigPath(), []byte(config), 0o644); err != nil {
		t.Fatalf("write ferryd config: %v", err)
	}
	if _, err := n.RestartFerryd(context.Background(), binDir); err != nil {
		t.Fatalf("start ferryd on %s: %v", n.Name, err)
	}
}

// assertPluginInstalled checks that ferryd copied the ferry plugin next to it into cniBin.
func assertPluginInstalled(t *testing.T, cniBin string) {
	t.Helper()
	want, err := os.ReadFile(filepath.Join(binDir, "ferry"))
	if err != nil {
		t.Fatal(err)
	}
	installed := filepath.Join(cniBin, "ferry")
	got, err := os.ReadFile(installed)
	if err != nil {
		t.Fatalf("ferryd did not install the plugin: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the ferry binary next to ferryd", installed)
	}
	if st, err := os.Stat(installed); err == nil && st.Mode().Perm()&0o111 == 0 {
		t.Errorf("%s is not executable: mode %v", installed, st.Mode())
	}
}

// networkReady returns the NetworkReady condition of the runtime's CRI Status.
func networkReady(t *testing.T, rt *containerd.Runtime) (bool, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := rt.Runtime.Status(ctx, &runtimeapi.StatusRequest{})
	if err != nil {
		t.Fatalf("CRI Status of %s: %v", rt.Node.Name, err)
	}
	for _, c := range resp.Status.Conditions {
		if c.Type == runtimeapi.NetworkReady {
			return c.Status, c.Reason + ": " + c.Message
		}
	}
	t.Fatalf("CRI Status of %s has no %s condition: %v", rt.Node.Name,
		runtimeapi.NetworkReady, resp.Status.Conditions)
	return false, ""
}

// waitNetworkReady polls CRI Status until containerd has loaded the CNI configuration.
func waitNetworkReady(t *testing.T, n *lab.Node, rt *containerd.Runtime) {
	t.Helper()
	deadline := time.Now().Add(readyWait)
	for {
		ready, reason := networkReady(t, rt)
		if ready {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: NetworkReady still false %s after ferryd wrote %s: %s",
				n.Name, readyWait, n.FerryConflistPath(), reason)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// mustExec runs a command in the pod's container and returns its stdout; it fails the test
// when the command fails.
func mustExec(t *testing.T, pod *containerd.Pod, cmd ...string) string {
	t.Helper()
	res, err := pod.Exec(context.Background(), 20, cmd...)
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 0 {
		t.Errorf("%q in pod %s: %s", cmd, pod.Name, res)
	}
	return res.Stdout
}

// assertPodsConnected pings between the two pods both ways and exchanges a TCP message.
func assertPodsConnected(t *testing.T, pods []*containerd.Pod) {
	t.Helper()
	for i, from := range pods {
		to := pods[1-i]
		out := mustExec(t, from, "ping", "-c", "3", "-W", "2", to.IP.String())
		if !strings.Contains(out, "3 packets received") {
			t.Errorf("ping from pod %s to %s lost packets:\n%s", from.Name, to.IP, out)
		}
		out = mustExec(t, from, "nc", "-w", "5", to.IP.String(), "8080")
		if want := "pong from " + to.Name; strings.TrimSpace(out) != want {
			t.Errorf("TCP from pod %s to %s:8080 returned %q, want %q", from.Name, to.IP,
				out, want)
		}
	}
}

// assertPodNetwork checks the pod's host veth, endpoint entry and host route on its node.
func assertPodNetwork(t *testing.T, n *lab.Node, pod *containerd.Pod) {
	t.Helper()
	hostName := cni.HostVethName(pod.SandboxID, "eth0")
	if out, err := n.Run(context.Background(), "ip", "-o", "link", "show", hostName); err != nil {
		t.Errorf("host veth %s of pod %s: %v", hostName, pod.Name, err)
	} else if !strings.Contains(out, "state UP") {
		t.Errorf("host veth %s of pod %s is not up: %s", hostName, pod.Name, out)
	}
	maps, err := datapath.OpenMaps(n.BPFFSDir())
	if err != nil {
		t.Fatalf("open maps of %s: %v", n.Name, err)
	}
	defer maps.Close()
	if _, found, err := maps.LookupEndpoint(pod.IP); err != nil || !found {
		t.Errorf("endpoint %s of pod %s: found %v, error %v", pod.IP, pod.Name, found, err)
	}
	route := mustRun(t, n, "ip", "-4", "route", "show", pod.IP.String()+"/32")
	if !strings.Contains(route, "dev "+hostName) {
		t.Errorf("%s has no route to pod %s via %s: %q", n.Name, pod.IP, hostName, route)
	}
}

// assertPodNetworkGone checks that nothing of the removed pod's network remains on its
// node: host veth, endpoint entry, host route, link pin, address reservation, namespace.
func assertPodNetworkGone(t *testing.T, n *lab.Node, pod *containerd.Pod) {
	t.Helper()
	hostName := cni.HostVethName(pod.SandboxID, "eth0")
	links := mustRun(t, n, "ip", "-o", "link", "show")
	if strings.Contains(links, hostName) {
		t.Errorf("host veth %s of removed pod %s remains:\n%s", hostName, pod.Name, links)
	}

	maps, err := datapath.OpenMaps(n.BPFFSDir())
	if err != nil {
		t.Fatalf("open maps of %s: %v", n.Name, err)
	}
	defer maps.Close()
	if _, found, err := maps.LookupEndpoint(pod.IP); err != nil || found {
		t.Errorf("endpoint %s of removed pod %s: found %v, error %v", pod.IP, pod.Name,
			found, err)
	}

	route := mustRun(t, n, "ip", "-4", "route", "show", pod.IP.String()+"/32")
	if strings.TrimSpace(route) != "" {
		t.Errorf("route to removed pod %s remains: %q", pod.IP, route)
	}
	pin := filepath.Join(n.BPFFSDir(), "links", "pod_"+hostName)
	if _, err := os.Stat(pin); err == nil {
		t.Errorf("link pin %s of removed pod %s remains", pin, pod.Name)
	}
	reservation := filepath.Join(n.IPAMDir, "ferry", pod.IP.String())
	if _, err := os.Stat(reservation); err == nil {
		t.Errorf("address %s of removed pod %s is still reserved (%s)", pod.IP, pod.Name,
			reservation)
	}
	if pod.NetNSPath != "" {
		if _, err := os.Stat(pod.NetNSPath); err == nil {
			t.Errorf("network namespace %s of removed pod %s remains", pod.NetNSPath, pod.Name)
		}
	}
}

func mustRun(t *testing.T, n *lab.Node, args ...string) string {
	t.Helper()
	out, err := n.Run(context.Background(), args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
