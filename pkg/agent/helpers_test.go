package agent

import (
	"encoding/json"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ferrynet/ferry/pkg/agent/agenttest"
	"github.com/ferrynet/ferry/pkg/config"
	"github.com/ferrynet/ferry/pkg/datapath"
)

// logBuffer collects log output for checks and shows it when a test fails.
type logBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func newLogger(t *testing.T) (*slog.Logger, *logBuffer) {
	buf := &logBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent log:\n%s", buf)
		}
	})
	h := slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})
	return slog.New(h), buf
}

func parseConfig(t *testing.T, yaml string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatalf("parse test config: %v\n%s", err, yaml)
	}
	return cfg
}

// startAgent starts an agent on node and closes it when the test ends.
func startAgent(t *testing.T, node *agenttest.Node, cfg *config.Config) (*Agent, *logBuffer) {
	t.Helper()
	log, buf := newLogger(t)
	var a *Agent
	node.Do(t, func() error {
		var err error
		a, err = Start(cfg, log)
		return err
	})
	t.Cleanup(func() { a.Close() })
	return a, buf
}

func openMaps(t *testing.T, dir string) *datapath.Maps {
	t.Helper()
	m, err := datapath.OpenMaps(dir)
	if err != nil {
		t.Fatalf("open maps: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func sortedNodeRoutes(t *testing.T, m *datapath.Maps) []datapath.NodeRoute {
	t.Helper()
	routes, err := m.NodeRoutes()
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(routes, func(a, b datapath.NodeRoute) int {
		return a.PodCIDR.Addr().Compare(b.PodCIDR.Addr())
	})
	return routes
}

func sortedExclusions(t *testing.T, m *datapath.Maps) []string {
	t.Helper()
	prefixes, err := m.MasqueradeExclusions()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range prefixes {
		out = append(out, p.String())
	}
	slices.Sort(out)
	return out
}

func nodeRoute(cidr, ip string) datapath.NodeRoute {
	return datapath.NodeRoute{PodCIDR: netip.MustParsePrefix(cidr), NodeIP: netip.MustParseAddr(ip)}
}

// kernelRouteInfo is what the tests check of a kernel route.
type kernelRouteInfo struct {
	Dst      string
	Gw       string
	LinkIdx  int
	OnLink   bool
	Protocol netlink.RouteProtocol
}

// listRoutes returns the IPv4 routes of the main table inside node, except
// the default route and the kernel's routes, sorted by destination.
func listRoutes(t *testing.T, node *agenttest.Node) []kernelRouteInfo {
	t.Helper()
	var out []kernelRouteInfo
	node.Do(t, func() error {
		filter := &netlink.Route{Table: unix.RT_TABLE_MAIN}
		routes, err := netlinksafe.RouteListFiltered(netlink.FAMILY_V4, filter,
			netlink.RT_FILTER_TABLE)
		if err != nil {
			return err
		}
		for _, r := range routes {
			dst, ok := routeDst(r)
			if !ok || dst.Bits() == 0 || r.Protocol == unix.RTPROT_KERNEL {
				continue
			}
			out = append(out, kernelRouteInfo{
				Dst:      dst.String(),
				Gw:       r.Gw.String(),
				LinkIdx:  r.LinkIndex,
				OnLink:   r.Flags&int(netlink.FLAG_ONLINK) != 0,
				Protocol: r.Protocol,
			})
		}
		return nil
	})
	slices.SortFunc(out, func(a, b kernelRouteInfo) int { return strings.Compare(a.Dst, b.Dst) })
	return out
}

func ferryRoute(node *agenttest.Node, dst, gw string) kernelRouteInfo {
	return kernelRouteInfo{Dst: dst, Gw: gw, LinkIdx: node.UplinkIndex, OnLink: true,
		Protocol: RouteProtocol}
}

func addRoute(t *testing.T, node *agenttest.Node, dst, gw string, proto netlink.RouteProtocol) {
	t.Helper()
	node.Do(t, func() error {
		return netlink.RouteAdd(&netlink.Route{
			LinkIndex: node.UplinkIndex,
			Dst:       ipNet(netip.MustParsePrefix(dst)),
			Gw:        netip.MustParseAddr(gw).AsSlice(),
			Flags:     int(netlink.FLAG_ONLINK),
			Protocol:  proto,
		})
	})
}

func countHooks(t *testing.T, node *agenttest.Node) agenttest.HookPrograms {
	t.Helper()
	var h agenttest.HookPrograms
	node.Do(t, func() error {
		var err error
		h, err = agenttest.CountHookPrograms(node.UplinkIndex)
		return err
	})
	return h
}

// readConflist decodes the CNI configuration list that the agent wrote.
func readConflist(t *testing.T, path string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read CNI configuration: %v", err)
	}
	var out map[string]any
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatalf("CNI configuration is not valid JSON: %v\n%s", err, data)
	}
	return out
}

func pathExists(t *testing.T, path string) bool {
	t.Helper()
	_, err := os.Stat(path)
	if err == nil {
		return true
	}
	if !os.IsNotExist(err) {
		t.Fatalf("stat %s: %v", path, err)
	}
	return false
}
