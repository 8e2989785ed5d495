package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/ferrynet/ferry/test/lab"
)

// Ports of the servers in the target namespaces.
const (
	echoPort  = 7000 // the serve command: TCP and UDP echo
	rrPort    = 7001 // the same, on rrCPU, for the request/response client
	iperfPort = 5201
)

// rrCPU is the CPU that the request/response client and its echo server share. On one CPU,
// each round trip switches from one to the other, where on two it would wake an idle CPU,
// which costs a VM tens of microseconds at random and buried the paths' differences.
var rrCPU = strconv.Itoa(runtime.NumCPU() - 1)

// clusterCIDR is the pod range of both labs. It is wider than the lab's default /16, so
// that the 5,000 extra nodes of the scale cases get /24 pod ranges inside it, as nodes of
// a real cluster of that size do.
var clusterCIDR = netip.MustParsePrefix("10.192.0.0/10")

// natTableLine is the line of the lab's ferryd configuration that sizes the NAT table.
// The bench drops it, so that ferryd uses its default size (262,144 flows), which holds
// the 100,000 extra entries and the flows of the connection-rate runs.
const natTableLine = "  natTableSize: 65536\n"

// target is a server that a client namespace sends traffic to.
type target struct {
	client *lab.Namespace
	server netip.Addr
}

// dataplane is one of the compared setups: a lab with its pods and servers, or the
// ceiling.
type dataplane struct {
	name  string
	lab   *lab.Lab
	paths map[string]target
}

// env is everything one benchmark run measures on.
type env struct {
	exe     string // this executable, started as the helper in namespaces
	binDir  string // ferry's binaries
	base    *dataplane
	ferry   *dataplane
	ceiling *dataplane
	ferryOp lab.FerryOptions
	logf    func(format string, args ...any)
}

// setupEnv builds the baseline lab, the ferry lab and the ceiling, adds the pods and starts
// the servers. The caller closes the labs with env.close, also on error.
func setupEnv(ctx context.Context, e *env) error {
	nodes := lab.CheckNodes()
	baseLab, err := lab.New(ctx, lab.Options{Nodes: nodes, Logf: e.logf})
	if err != nil {
		return fmt.Errorf("create baseline lab: %w", err)
	}
	e.base = &dataplane{name: cfgBaseline, lab: baseLab}
	if err := baseLab.SetupBaseline(ctx, clusterCIDR); err != nil {
		return fmt.Errorf("set up baseline: %w", err)
	}

	ferryLab, err := lab.New(ctx, lab.Options{
		Nodes:      nodes,
		CNIBinDirs: []string{e.binDir, "/usr/lib/cni"},
		Logf:       e.logf,
	})
	if err != nil {
		return fmt.Errorf("create ferry lab: %w", err)
	}
	e.ferry = &dataplane{name: cfgFerry, lab: ferryLab}
	// worker-0 and worker-1 share a subnet and need no cloud routes; worker-2 is on the
	// other subnet, as in the demo.
	e.ferryOp = lab.FerryOptions{
		BinDir:      e.binDir,
		ClusterCIDR: clusterCIDR,
		CloudRoutes: []string{"worker-0", "worker-2"},
	}
	if err := setupFerry(ctx, ferryLab, e.ferryOp); err != nil {
		return fmt.Errorf("set up ferry: %w", err)
	}

	for _, dp := range []*dataplane{e.base, e.ferry} {
		if err := addPods(ctx, e, dp); err != nil {
			return err
		}
	}

	c, err := baseLab.AddCeiling(ctx)
	if err != nil {
		return fmt.Errorf("add ceiling: %w", err)
	}
	e.ceiling = &dataplane{name: cfgCeiling, lab: baseLab, paths: map[string]target{
		pathCeiling: {client: c.A, server: c.IPB},
	}}
	return startServers(ctx, e, c.B)
}

// setupFerry is lab.SetupFerry with ferryd's default NAT table size.
func setupFerry(ctx context.Context, l *lab.Lab, opts lab.FerryOptions) error {
	for _, n := range l.Nodes {
		if err := writeFerrydConfig(n, opts, nil); err != nil {
			return err
		}
		if _, err := n.RestartFerryd(ctx, opts.BinDir); err != nil {
			return err
		}
		if err := n.AddServiceDNAT(ctx, lab.ServiceVIP, lab.ServiceBackend); err != nil {
			return err
		}
	}
	for _, name := range opts.CloudRoutes {
		if err := l.AddCloudRoute(l.Node(name)); err != nil {
			return err
		}
	}
	return nil
}

// writeFerrydConfig writes the lab's ferryd configuration of n without its NAT table size
// and with extra nodes appended to the node list.
func writeFerrydConfig(n *lab.Node, opts lab.FerryOptions, extra []string) error {
	cfg := string(n.FerrydConfig(opts))
	if !strings.Contains(cfg, natTableLine) {
		return fmt.Errorf("edit ferryd config of %s: no line %q in it; update natTableLine "+
			"in test/bench to the lab's format", n.Name, strings.TrimSpace(natTableLine))
	}
	cfg = strings.Replace(cfg, natTableLine, "", 1)
	if len(extra) > 0 {
		const marker = "masquerade:\n"
		i := strings.Index(cfg, marker)
		if i < 0 {
			return fmt.Errorf("edit ferryd config of %s: no %q section after the node list",
				n.Name, strings.TrimSpace(marker))
		}
		cfg = cfg[:i] + strings.Join(extra, "") + cfg[i:]
	}
	path := n.FerrydConfigPath()
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return fmt.Errorf("write ferryd config %s: %w", path, err)
	}
	return nil
}

// addPods adds pod-a1 and pod-a2 on worker-0 and pod-b1 on worker-1, and sets the paths:
// pod-a1 is the client of every path.
func addPods(ctx context.Context, e *env, dp *dataplane) error {
	w0, w1 := dp.lab.Node("worker-0"), dp.lab.Node("worker-1")
	specs := []struct {
		node *lab.Node
		name string
	}{{w0, "pod-a1"}, {w0, "pod-a2"}, {w1, "pod-b1"}}
	pods := map[string]*lab.Pod{}
	for _, s := range specs {
		pod, err := s.node.AddPod(ctx, s.name, nil)
		if err != nil {
			return fmt.Errorf("add %s pod: %w", dp.name, err)
		}
		pods[s.name] = pod
	}
	client := pods["pod-a1"].Namespace
	dp.paths = map[string]target{
		pathSameNode:   {client: client, server: pods["pod-a2"].IP},
		pathCrossNode:  {client: client, server: pods["pod-b1"].IP},
		pathMasquerade: {client: client, server: lab.InternetIP},
	}
	for _, ns := range []*lab.Namespace{pods["pod-a2"].Namespace, pods["pod-b1"].Namespace,
		dp.lab.Ext} {
		if err := startServers(ctx, e, ns); err != nil {
			return err
		}
	}
	return nil
}

// serverLifetime bounds the servers, in case the lab teardown misses them.
const serverLifetime = "40m"

// startServers starts the echo server and an iperf3 server in ns. The lab stops them when
// it closes.
func startServers(ctx context.Context, e *env, ns *lab.Namespace) error {
	_, err := ns.Start(ctx, e.exe, "serve", "-port", strconv.Itoa(echoPort),
		"-lifetime", serverLifetime)
	if err != nil {
		return fmt.Errorf("start echo server: %w", err)
	}
	_, err = ns.Start(ctx, "taskset", "-c", rrCPU, e.exe, "serve", "-port",
		strconv.Itoa(rrPort), "-lifetime", serverLifetime)
	if err != nil {
		return fmt.Errorf("start echo server on CPU %s: %w", rrCPU, err)
	}
	_, err = ns.Start(ctx, "timeout", serverLifetime, "iperf3", "-s", "-p",
		strconv.Itoa(iperfPort))
	if err != nil {
		return fmt.Errorf("start iperf3 server: %w", err)
	}
	return nil
}

// close removes the labs, which stops every process started in them.
func (e *env) close() {
	for _, dp := range []*dataplane{e.base, e.ferry} {
		if dp == nil {
			continue
		}
		if err := dp.lab.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		}
	}
}

// helperPath returns the path of this executable, which the namespaces start as the
// helper.
func helperPath() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find own executable for the helper commands: %w", err)
	}
	return filepath.EvalSymlinks(exe)
}
