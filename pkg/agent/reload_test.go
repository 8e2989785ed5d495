package agent

import (
	"context"
	"errors"
	"os"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/ferrynet/ferry/pkg/agent/agenttest"
	"github.com/ferrynet/ferry/pkg/config"
	"github.com/ferrynet/ferry/pkg/datapath"
)

// changedNodes differ from agenttest.DefaultNodes: worker-1 has a new IP,
// worker-2 is gone and worker-3 is new.
var changedNodes = []string{
	"{name: worker-0, ip: 10.0.1.20, podCIDR: 10.200.0.0/24}",
	"{name: worker-1, ip: 10.0.1.31, podCIDR: 10.200.1.0/24}",
	"{name: worker-3, ip: 10.0.1.23, podCIDR: 10.200.3.0/24}",
}

// uplinkProgramIDs returns the IDs of the tcx programs on the uplink.
func uplinkProgramIDs(t *testing.T, node *agenttest.Node) []ebpf.ProgramID {
	t.Helper()
	var ids []ebpf.ProgramID
	node.Do(t, func() error {
		for _, attach := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
			res, err := link.QueryPrograms(link.QueryOptions{Target: node.UplinkIndex,
				Attach: attach})
			if err != nil {
				return err
			}
			for _, p := range res.Programs {
				ids = append(ids, p.ID)
			}
		}
		return nil
	})
	return ids
}

func TestReloadAppliesNodeChanges(t *testing.T) {
	node := agenttest.NewNode(t)
	a, logs := startAgent(t, node, parseConfig(t, node.Config(nil, "")))
	progsBefore := uplinkProgramIDs(t, node)

	next := parseConfig(t, node.Config(changedNodes, "masquerade:\n  enabled: false\n"+
		"  portRange: 40000-40100\n  excludeCIDRs: [198.51.100.0/24]\n"))
	node.Do(t, func() error { return a.Reload(next) })

	m := openMaps(t, node.BPFFSDir)
	wantRoutes := []datapath.NodeRoute{
		nodeRoute("10.200.1.0/24", "10.0.1.31"),
		nodeRoute("10.200.3.0/24", "10.0.1.23"),
	}
	if got := sortedNodeRoutes(t, m); !reflect.DeepEqual(got, wantRoutes) {
		t.Errorf("node routes = %v, want %v", got, wantRoutes)
	}
	wantExcl := []string{"10.0.1.20/32", "10.0.1.23/32", "10.0.1.31/32", "10.200.0.0/16",
		"198.51.100.0/24"}
	if got := sortedExclusions(t, m); !reflect.DeepEqual(got, wantExcl) {
		t.Errorf("masquerade exclusions = %v, want %v", got, wantExcl)
	}
	s, err := m.Settings()
	if err != nil {
		t.Fatal(err)
	}
	if s.Masquerade || s.NATPortMin != 40000 || s.NATPortMax != 40100 {
		t.Errorf("settings masquerade %v ports %d-%d, want false 40000-40100",
			s.Masquerade, s.NATPortMin, s.NATPortMax)
	}

	wantKernel := []kernelRouteInfo{
		ferryRoute(node, "10.200.1.0/24", "10.0.1.31"),
		ferryRoute(node, "10.200.3.0/24", "10.0.1.23"),
	}
	if got := listRoutes(t, node); !reflect.DeepEqual(got, wantKernel) {
		t.Errorf("kernel routes = %+v, want %+v", got, wantKernel)
	}

	if progsAfter := uplinkProgramIDs(t, node); !reflect.DeepEqual(progsAfter, progsBefore) {
		t.Errorf("uplink programs changed from %v to %v", progsBefore, progsAfter)
	}
	for _, line := range []string{
		`msg="node added" node=worker-3`,
		`msg="node removed" node=worker-2`,
		`msg="node changed" node=worker-1 node_ip=10.0.1.31`,
		`msg="masquerade settings changed" masquerade=false`,
	} {
		if !strings.Contains(logs.String(), line) {
			t.Errorf("log lacks %s", line)
		}
	}
}

func TestReloadRejectsRestartOnlyChange(t *testing.T) {
	cases := []struct {
		name  string
		nodes []string
		extra string
		field string
	}{
		{"NAT table size", nil, "masquerade:\n  natTableSize: 2048\n", "masquerade.natTableSize"},
		{"attach mode", nil, "attachMode: clsact\n", "attachMode"},
		{"own pod CIDR", []string{
			"{name: worker-0, ip: 10.0.1.20, podCIDR: 10.200.8.0/24}",
			"{name: worker-3, ip: 10.0.1.23, podCIDR: 10.200.3.0/24}",
		}, "", "nodes[0].podCIDR"},
		{"device", nil, "device: eth0\n", "device"},
		{"metrics address", nil, "metricsAddress: 127.0.0.1:9999\n", "metricsAddress"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			node := agenttest.NewNode(t)
			a, _ := startAgent(t, node, parseConfig(t, node.Config(nil, "")))
			m := openMaps(t, node.BPFFSDir)
			routesBefore := sortedNodeRoutes(t, m)
			kernelBefore := listRoutes(t, node)

			// Every case also adds worker-3, which must not reach the maps.
			nodes := tc.nodes
			if nodes == nil {
				nodes = append(append([]string(nil), agenttest.DefaultNodes...),
					"{name: worker-3, ip: 10.0.1.23, podCIDR: 10.200.3.0/24}")
			}
			next := parseConfig(t, node.Config(nodes, tc.extra))
			err := node.DoErr(func() error { return a.Reload(next) })
			var cfgErr *config.Error
			if !errors.As(err, &cfgErr) {
				t.Fatalf("Reload error = %v (%T), want *config.Error", err, err)
			}
			if len(cfgErr.Problems) != 1 || cfgErr.Problems[0].Field != tc.field {
				t.Errorf("problems = %v, want one for %s", cfgErr.Problems, tc.field)
			}
			if !strings.Contains(err.Error(), "restart ferryd") {
				t.Errorf("error %q does not say to restart ferryd", err)
			}
			if got := sortedNodeRoutes(t, m); !reflect.DeepEqual(got, routesBefore) {
				t.Errorf("node routes changed to %v", got)
			}
			if got := listRoutes(t, node); !reflect.DeepEqual(got, kernelBefore) {
				t.Errorf("kernel routes changed to %+v", got)
			}
		})
	}
}

// waitFor polls cond every 20 ms until it holds or 10 s have passed.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRunReloadsAndStops(t *testing.T) {
	node := agenttest.NewNode(t)
	path := node.WriteConfig(t, node.Config(nil, ""))
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	log, logs := newLogger(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reload := make(chan os.Signal, 1)
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- node.DoErr(func() error {
			return Run(ctx, cfg, Options{
				ConfigPath:  path,
				Logger:      log,
				Reload:      reload,
				NATInterval: 50 * time.Millisecond,
				Ready:       func(*Agent) { close(ready) },
			})
		})
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Run returned before ready: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("timed out waiting for the agent to become ready")
	}

	m := openMaps(t, node.BPFFSDir)
	worker3 := nodeRoute("10.200.3.0/24", "10.0.1.23")
	node.WriteConfig(t, node.Config(changedNodes, ""))
	reload <- syscall.SIGHUP
	waitFor(t, "the reload to add worker-3", func() bool {
		found, err := m.NodeRoutes()
		return err == nil && slices.Contains(found, worker3)
	})

	node.WriteConfig(t, node.Config(nil, "attachMode: xdp\n"))
	reload <- syscall.SIGHUP
	waitFor(t, "the reload to be rejected", func() bool {
		return strings.Contains(logs.String(), "reload rejected")
	})
	if got := sortedNodeRoutes(t, m); !slices.Contains(got, worker3) {
		t.Errorf("rejected reload changed node routes to %v", got)
	}

	waitFor(t, "a NAT expiry", func() bool {
		return strings.Contains(logs.String(), "expired idle NAT flows")
	})

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run returned %v after cancel, want nil", err)
	}
	if h := countHooks(t, node); h.Ingress() != 1 || h.Egress() != 1 {
		t.Errorf("uplink programs after stop = %+v, want one per hook", h)
	}
	if _, err := m.Settings(); err != nil {
		t.Errorf("settings after stop: %v", err)
	}
}

func TestReloadRewritesConflistOnMTUChange(t *testing.T) {
	node := agenttest.NewNode(t)
	cfg := parseConfig(t, node.Config(nil, ""))
	a, _ := startAgent(t, node, cfg)
	node.Do(t, func() error {
		eth0, err := netlink.LinkByIndex(node.UplinkIndex)
		if err != nil {
			return err
		}
		return netlink.LinkSetMTU(eth0, 1400)
	})
	node.Do(t, func() error { return a.Reload(cfg) })
	plugin := readConflist(t, node.ConfPath())["plugins"].([]any)[0].(map[string]any)
	if plugin["mtu"] != float64(1400) {
		t.Errorf("mtu = %v after reload, want 1400", plugin["mtu"])
	}
}
