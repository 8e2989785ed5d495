package main

import (
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ferrynet/ferry/pkg/agent"
	"github.com/ferrynet/ferry/pkg/agent/agenttest"
	"github.com/ferrynet/ferry/pkg/datapath"
)

// buildDir is the directory of the binary that buildFerryd built, if any.
var buildDir string

// buildFerryd builds the ferryd binary once per test run.
var buildFerryd = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "ferryd-test-")
	if err != nil {
		return "", err
	}
	buildDir = dir
	bin := filepath.Join(dir, "ferryd")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", errors.New("go build: " + err.Error() + ": " + string(out))
	}
	return bin, nil
})

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// lockedBuffer is a log sink that the process and the test share.
type lockedBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// ferryd is a ferryd process running inside a node's namespace.
type ferryd struct {
	cmd  *exec.Cmd
	log  *lockedBuffer
	done chan struct{}
	err  error
}

// startFerryd runs the binary with args under nsenter in node's namespace.
// nsenter execs ferryd, so signals to the process reach ferryd itself.
func startFerryd(t *testing.T, node *agenttest.Node, args ...string) *ferryd {
	t.Helper()
	bin, err := buildFerryd()
	if err != nil {
		t.Fatal(err)
	}
	f := &ferryd{log: &lockedBuffer{}, done: make(chan struct{})}
	f.cmd = exec.Command("nsenter", append([]string{"--net=" + node.NSPath, "--", bin},
		args...)...)
	f.cmd.Stdout = f.log
	f.cmd.Stderr = f.log
	if err := f.cmd.Start(); err != nil {
		t.Fatalf("start ferryd: %v", err)
	}
	go func() {
		f.err = f.cmd.Wait()
		close(f.done)
	}()
	t.Cleanup(func() {
		select {
		case <-f.done:
		default:
			f.cmd.Process.Kill()
			<-f.done
		}
		if t.Failed() {
			t.Logf("ferryd %v output:\n%s", args, f.log)
		}
	})
	return f
}

// wait waits for the process to exit and returns its exit status.
func (f *ferryd) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-f.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("ferryd did not exit within 30 s")
	}
	var exitErr *exec.ExitError
	if errors.As(f.err, &exitErr) {
		return exitErr.ExitCode()
	}
	if f.err != nil {
		t.Fatalf("wait for ferryd: %v", f.err)
	}
	return 0
}

func (f *ferryd) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := f.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("send %v to ferryd: %v", sig, err)
	}
}

// waitFor polls cond every 20 ms until it holds, failing after 20 s or when
// ferryd exits.
func (f *ferryd) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		select {
		case <-f.done:
			t.Fatalf("ferryd exited (%v) while waiting for %s", f.err, what)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func nodeRoutes(t *testing.T, dir string) []datapath.NodeRoute {
	t.Helper()
	m, err := datapath.OpenMaps(dir)
	if err != nil {
		t.Fatalf("open maps: %v", err)
	}
	defer m.Close()
	routes, err := m.NodeRoutes()
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(routes, func(a, b datapath.NodeRoute) int {
		return a.PodCIDR.Addr().Compare(b.PodCIDR.Addr())
	})
	return routes
}

// ferryKernelRoutes returns the destinations of ferry's kernel routes in node.
func ferryKernelRoutes(t *testing.T, node *agenttest.Node) []string {
	t.Helper()
	var out []string
	node.Do(t, func() error {
		filter := &netlink.Route{Table: unix.RT_TABLE_MAIN, Protocol: agent.RouteProtocol}
		routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, filter,
			netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
		if err != nil {
			return err
		}
		for _, r := range routes {
			out = append(out, r.Dst.String()+" via "+r.Gw.String())
		}
		return nil
	})
	slices.Sort(out)
	return out
}

func uplinkPrograms(t *testing.T, node *agenttest.Node) agenttest.HookPrograms {
	t.Helper()
	var h agenttest.HookPrograms
	node.Do(t, func() error {
		var err error
		h, err = agenttest.CountHookPrograms(node.UplinkIndex)
		return err
	})
	return h
}

func route(cidr, ip string) datapath.NodeRoute {
	return datapath.NodeRoute{PodCIDR: netip.MustParsePrefix(cidr), NodeIP: netip.MustParseAddr(ip)}
}

func TestFerrydLifecycle(t *testing.T) {
	node := agenttest.NewNode(t)
	path := node.WriteConfig(t, node.Config(nil, ""))
	f := startFerryd(t, node, "--config", path, "--log-level", "debug")

	f.waitFor(t, "the CNI configuration", func() bool { return exists(node.ConfPath()) })
	// ferryd logs "ready" right after it renames the configuration into place.
	f.waitFor(t, "the ready log line", func() bool {
		return strings.Contains(f.log.String(), "msg=ready")
	})
	var conf struct {
		Plugins []struct {
			MTU  int `json:"mtu"`
			IPAM struct {
				Ranges [][]struct{ Subnet string } `json:"ranges"`
			} `json:"ipam"`
		} `json:"plugins"`
	}
	data, err := os.ReadFile(node.ConfPath())
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &conf); err != nil {
		t.Fatalf("CNI configuration is not valid JSON: %v\n%s", err, data)
	}
	if len(conf.Plugins) != 1 || conf.Plugins[0].MTU != agenttest.UplinkMTU ||
		conf.Plugins[0].IPAM.Ranges[0][0].Subnet != "10.200.0.0/24" {
		t.Errorf("CNI configuration = %s, want MTU %d and subnet 10.200.0.0/24",
			data, agenttest.UplinkMTU)
	}
	want := []datapath.NodeRoute{
		route("10.200.1.0/24", "10.0.1.21"),
		route("10.200.2.0/24", "10.0.2.20"),
	}
	if got := nodeRoutes(t, node.BPFFSDir); !slices.Equal(got, want) {
		t.Errorf("node routes = %v, want %v", got, want)
	}
	if got, want := ferryKernelRoutes(t, node), []string{"10.200.1.0/24 via 10.0.1.21"}; !slices.Equal(got, want) {
		t.Errorf("kernel routes = %v, want %v", got, want)
	}

	// SIGHUP with worker-1 removed and worker-3 added.
	node.WriteConfig(t, node.Config([]string{
		agenttest.DefaultNodes[0], agenttest.DefaultNodes[2],
		"{name: worker-3, ip: 10.0.1.23, podCIDR: 10.200.3.0/24}",
	}, ""))
	f.signal(t, syscall.SIGHUP)
	want = []datapath.NodeRoute{
		route("10.200.2.0/24", "10.0.2.20"),
		route("10.200.3.0/24", "10.0.1.23"),
	}
	f.waitFor(t, "the reloaded node routes", func() bool {
		return slices.Equal(nodeRoutes(t, node.BPFFSDir), want)
	})
	// The reload updates the maps first and the kernel routes after them.
	wantKernel := []string{"10.200.3.0/24 via 10.0.1.23"}
	f.waitFor(t, "the reloaded kernel routes", func() bool {
		return slices.Equal(ferryKernelRoutes(t, node), wantKernel)
	})

	// SIGHUP with an invalid config keeps the state.
	node.WriteConfig(t, node.Config([]string{
		"{name: worker-0, ip: 10.0.1.20, podCIDR: 10.201.0.0/24}",
	}, ""))
	f.signal(t, syscall.SIGHUP)
	f.waitFor(t, "the rejected reload", func() bool {
		return strings.Contains(f.log.String(), "reload rejected")
	})
	if got := nodeRoutes(t, node.BPFFSDir); !slices.Equal(got, want) {
		t.Errorf("node routes after a rejected reload = %v, want %v", got, want)
	}

	f.signal(t, syscall.SIGTERM)
	if code := f.wait(t); code != 0 {
		t.Errorf("exit status after SIGTERM = %d, want 0", code)
	}
	if h := uplinkPrograms(t, node); h != (agenttest.HookPrograms{TCXIngress: 1, TCXEgress: 1}) {
		t.Errorf("uplink programs after stop = %+v, want one tcx program per hook", h)
	}
	if !exists(node.ConfPath()) {
		t.Errorf("CNI configuration is gone after stop")
	}

	// --remove takes everything away again.
	node.WriteConfig(t, node.Config(nil, ""))
	r := startFerryd(t, node, "--config", path, "--remove")
	if code := r.wait(t); code != 0 {
		t.Fatalf("--remove exit status = %d, want 0", code)
	}
	for _, p := range []string{node.BPFFSDir, node.ConfPath()} {
		if exists(p) {
			t.Errorf("%s exists after --remove", p)
		}
	}
	if got := ferryKernelRoutes(t, node); len(got) != 0 {
		t.Errorf("kernel routes after --remove = %v, want none", got)
	}
	if h := uplinkPrograms(t, node); h != (agenttest.HookPrograms{}) {
		t.Errorf("uplink programs after --remove = %+v, want none", h)
	}
}

func TestFerrydRestartIsIdempotent(t *testing.T) {
	for _, mode := range []string{"tcx", "clsact"} {
		t.Run(mode, func(t *testing.T) {
			node := agenttest.NewNode(t)
			path := node.WriteConfig(t, node.Config(nil, "attachMode: "+mode+"\n"))
			for i := range 3 {
				f := startFerryd(t, node, "--config", path)
				f.waitFor(t, "ready", func() bool {
					return strings.Contains(f.log.String(), "msg=ready")
				})
				f.signal(t, syscall.SIGTERM)
				if code := f.wait(t); code != 0 {
					t.Fatalf("start %d: exit status = %d, want 0", i+1, code)
				}
			}
			h := uplinkPrograms(t, node)
			if h.Ingress() != 1 || h.Egress() != 1 {
				t.Errorf("uplink programs after 3 starts = %+v, want one per hook", h)
			}
			if mode == "clsact" && h.ClsactIngress != 1 || mode == "tcx" && h.TCXIngress != 1 {
				t.Errorf("uplink programs = %+v, want them attached with %s", h, mode)
			}
			if got := ferryKernelRoutes(t, node); len(got) != 1 {
				t.Errorf("kernel routes after 3 starts = %v, want one", got)
			}
		})
	}
}

func TestFerrydMissingDeviceExitsTwo(t *testing.T) {
	node := agenttest.NewNode(t)
	path := node.WriteConfig(t, node.Config(nil, "device: eth9\n"))
	f := startFerryd(t, node, "--config", path)
	if code := f.wait(t); code != exitUsage {
		t.Errorf("exit status = %d, want %d", code, exitUsage)
	}
	if !strings.Contains(f.log.String(), `device: interface "eth9" not found`) {
		t.Errorf("output does not name the missing device:\n%s", f.log)
	}
	for _, p := range []string{node.BPFFSDir, node.ConfDir} {
		if exists(p) {
			t.Errorf("%s exists after a failed start", p)
		}
	}
}
