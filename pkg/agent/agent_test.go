package agent

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/containernetworking/cni/libcni"

	"github.com/ferrynet/ferry/pkg/agent/agenttest"
	"github.com/ferrynet/ferry/pkg/config"
	"github.com/ferrynet/ferry/pkg/datapath"
)

func TestStartFillsMaps(t *testing.T) {
	node := agenttest.NewNode(t)
	cfg := parseConfig(t, node.Config(nil,
		"masquerade:\n  excludeCIDRs: [192.168.0.0/16]\n  portRange: 40000-50000\n"))
	a, _ := startAgent(t, node, cfg)
	if a.AttachMode() != datapath.AttachTCX {
		t.Errorf("attach mode = %s, want tcx on a kernel with tcx", a.AttachMode())
	}

	m := openMaps(t, node.BPFFSDir)
	settings, err := m.Settings()
	if err != nil {
		t.Fatalf("read settings: %v", err)
	}
	want := datapath.NodeSettings{
		NodeIP:        netip.MustParseAddr("10.0.1.20"),
		PodCIDR:       netip.MustParsePrefix("10.200.0.0/24"),
		UplinkIfIndex: node.UplinkIndex,
		Masquerade:    true,
		NATPortMin:    40000,
		NATPortMax:    50000,
		UplinkClsact:  false,
		PodClsact:     true,
	}
	if settings != want {
		t.Errorf("settings = %+v, want %+v", settings, want)
	}

	wantRoutes := []datapath.NodeRoute{
		nodeRoute("10.200.1.0/24", "10.0.1.21"),
		nodeRoute("10.200.2.0/24", "10.0.2.20"),
	}
	if got := sortedNodeRoutes(t, m); !reflect.DeepEqual(got, wantRoutes) {
		t.Errorf("node routes = %v, want %v", got, wantRoutes)
	}

	wantExcl := []string{"10.0.1.20/32", "10.0.1.21/32", "10.0.2.20/32", "10.200.0.0/16",
		"192.168.0.0/16"}
	if got := sortedExclusions(t, m); !reflect.DeepEqual(got, wantExcl) {
		t.Errorf("masquerade exclusions = %v, want %v", got, wantExcl)
	}

	if h := countHooks(t, node); h != (agenttest.HookPrograms{TCXIngress: 1, TCXEgress: 1}) {
		t.Errorf("uplink programs = %+v, want one tcx program per hook", h)
	}
}

func TestStartInstallsOnLinkRoutes(t *testing.T) {
	node := agenttest.NewNode(t)
	startAgent(t, node, parseConfig(t, node.Config(nil, "")))

	// worker-2 (10.0.2.20) is on another subnet and gets no route.
	want := []kernelRouteInfo{ferryRoute(node, "10.200.1.0/24", "10.0.1.21")}
	if got := listRoutes(t, node); !reflect.DeepEqual(got, want) {
		t.Errorf("routes = %+v, want %+v", got, want)
	}
}

func TestStartKeepsOtherProtocolsRoutes(t *testing.T) {
	node := agenttest.NewNode(t)
	const static = 4 // RTPROT_STATIC
	// A route of another protocol for a remote pod range, one for an unrelated
	// range, and a stale ferry route left by an earlier run.
	addRoute(t, node, "10.200.1.0/24", "10.0.1.99", static)
	addRoute(t, node, "10.99.0.0/16", "10.0.1.1", static)
	addRoute(t, node, "10.200.9.0/24", "10.0.1.29", RouteProtocol)

	_, logs := startAgent(t, node, parseConfig(t, node.Config(nil, "")))

	want := []kernelRouteInfo{
		{Dst: "10.200.1.0/24", Gw: "10.0.1.99", LinkIdx: node.UplinkIndex, OnLink: true,
			Protocol: static},
		{Dst: "10.99.0.0/16", Gw: "10.0.1.1", LinkIdx: node.UplinkIndex, OnLink: true,
			Protocol: static},
	}
	if got := listRoutes(t, node); !reflect.DeepEqual(got, want) {
		t.Errorf("routes = %+v, want %+v", got, want)
	}
	if !strings.Contains(logs.String(), "kernel route left to another protocol") {
		t.Errorf("log does not report the route conflict:\n%s", logs)
	}
}

func TestStartWritesValidConflist(t *testing.T) {
	node := agenttest.NewNode(t)
	startAgent(t, node, parseConfig(t, node.Config(nil, "")))

	list, err := libcni.ConfListFromFile(node.ConfPath())
	if err != nil {
		t.Fatalf("libcni rejects the configuration list: %v", err)
	}
	// libcni 1.3 picks the highest version it supports from cniVersions.
	if list.Name != "ferry" || list.CNIVersion != "1.1.0" || len(list.Plugins) != 1 {
		t.Errorf("libcni reads name %q version %q with %d plugins, want ferry 1.1.0 with 1",
			list.Name, list.CNIVersion, len(list.Plugins))
	}

	conf := readConflist(t, node.ConfPath())
	if got := conf["cniVersion"]; got != "1.0.0" {
		t.Errorf("cniVersion = %v, want 1.0.0", got)
	}
	wantVersions := []any{"0.3.1", "0.4.0", "1.0.0", "1.1.0"}
	if got := conf["cniVersions"]; !reflect.DeepEqual(got, wantVersions) {
		t.Errorf("cniVersions = %v, want %v", got, wantVersions)
	}
	plugin := conf["plugins"].([]any)[0].(map[string]any)
	wantPlugin := map[string]any{
		"type":     "ferry",
		"bpffsDir": node.BPFFSDir,
		"mtu":      float64(agenttest.UplinkMTU),
		"ipam": map[string]any{
			"type":    "host-local",
			"ranges":  []any{[]any{map[string]any{"subnet": "10.200.0.0/24"}}},
			"routes":  []any{map[string]any{"dst": "0.0.0.0/0"}},
			"dataDir": node.IPAMDataDir,
		},
	}
	if !reflect.DeepEqual(plugin, wantPlugin) {
		t.Errorf("plugin = %v, want %v", plugin, wantPlugin)
	}

	info, err := os.Stat(node.ConfPath())
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o644 {
		t.Errorf("conflist mode = %v, want 0644", info.Mode().Perm())
	}
	entries, err := os.ReadDir(node.ConfDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("conf dir has %d files, want only the conflist: %v", len(entries), entries)
	}
}

func TestStartRejectsConfigNotFittingNode(t *testing.T) {
	cases := []struct {
		name  string
		nodes []string
		extra string
		field string
	}{
		{"missing device", nil, "device: eth9\n", "device"},
		{"first address differs from node entry", []string{
			"{name: worker-0, ip: 10.0.1.30, podCIDR: 10.200.0.0/24}",
		}, "", "nodeIP"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			node := agenttest.NewNode(t)
			cfg := parseConfig(t, node.Config(tc.nodes, tc.extra))
			log, _ := newLogger(t)
			err := node.DoErr(func() error {
				a, err := Start(cfg, log)
				if err == nil {
					a.Close()
				}
				return err
			})
			var cfgErr *config.Error
			if !errors.As(err, &cfgErr) {
				t.Fatalf("Start error = %v (%T), want *config.Error", err, err)
			}
			if cfgErr.Problems[0].Field != tc.field {
				t.Errorf("problem field = %q, want %q (%v)", cfgErr.Problems[0].Field, tc.field, err)
			}
			if pathExists(t, node.BPFFSDir) {
				t.Errorf("Start created %s", node.BPFFSDir)
			}
			if pathExists(t, node.ConfDir) {
				t.Errorf("Start created %s", node.ConfDir)
			}
			if routes := listRoutes(t, node); len(routes) != 0 {
				t.Errorf("Start added routes %+v", routes)
			}
		})
	}
}

func TestStartFailureWritesNoConflist(t *testing.T) {
	node := agenttest.NewNode(t)
	first, _ := startAgent(t, node, parseConfig(t, node.Config(nil, "")))
	first.Close()
	if err := os.Remove(node.ConfPath()); err != nil {
		t.Fatal(err)
	}
	// An endpoints map of a layout that Load cannot convert, with an entry:
	// loading fails after the config was accepted.
	pinIncompatibleEndpoints(t, node.BPFFSDir)

	cfg := parseConfig(t, node.Config(nil, ""))
	log, _ := newLogger(t)
	err := node.DoErr(func() error {
		a, err := Start(cfg, log)
		if err == nil {
			a.Close()
		}
		return err
	})
	if !errors.Is(err, datapath.ErrMapLayout) {
		t.Fatalf("Start with an unconvertible endpoints map returned %v, want ErrMapLayout", err)
	}
	if errors.As(err, new(*config.Error)) {
		t.Errorf("Start error %v is a *config.Error; the config itself is valid", err)
	}
	if pathExists(t, node.ConfPath()) {
		t.Errorf("failed Start wrote %s", node.ConfPath())
	}
}

// pinIncompatibleEndpoints replaces the pinned endpoints map under dir by a
// map with 8-byte keys and no BTF, holding one entry.
func pinIncompatibleEndpoints(t *testing.T, dir string) {
	t.Helper()
	path := filepath.Join(dir, "endpoints")
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 8, ValueSize: 16,
		MaxEntries: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Put(uint64(1), make([]byte, 16)); err != nil {
		t.Fatal(err)
	}
	if err := m.Pin(path); err != nil {
		t.Fatal(err)
	}
}

func TestRestartKeepsOnePerHook(t *testing.T) {
	cases := []struct {
		name  string
		modes []string
		want  agenttest.HookPrograms
	}{
		{"tcx", []string{"tcx", "tcx", "tcx"}, agenttest.HookPrograms{TCXIngress: 1, TCXEgress: 1}},
		{"clsact", []string{"clsact", "clsact", "clsact"},
			agenttest.HookPrograms{ClsactIngress: 1, ClsactEgress: 1}},
		{"auto", []string{"auto", "auto", "auto"},
			agenttest.HookPrograms{TCXIngress: 1, TCXEgress: 1}},
		{"tcx to clsact", []string{"tcx", "clsact"},
			agenttest.HookPrograms{ClsactIngress: 1, ClsactEgress: 1}},
		{"clsact to tcx", []string{"clsact", "tcx"},
			agenttest.HookPrograms{TCXIngress: 1, TCXEgress: 1}},
		// auto picks tcx where the kernel has it, whatever the previous mode.
		{"clsact then auto", []string{"clsact", "auto"},
			agenttest.HookPrograms{TCXIngress: 1, TCXEgress: 1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			node := agenttest.NewNode(t)
			for i, mode := range tc.modes {
				cfg := parseConfig(t, node.Config(nil, "attachMode: "+mode+"\n"))
				a, _ := startAgent(t, node, cfg)
				a.Close()
				h := countHooks(t, node)
				if h.Ingress() != 1 || h.Egress() != 1 {
					t.Errorf("start %d (%s): uplink programs = %+v, want one per hook",
						i+1, mode, h)
				}
			}
			if h := countHooks(t, node); h != tc.want {
				t.Errorf("uplink programs = %+v, want %+v", h, tc.want)
			}
			m := openMaps(t, node.BPFFSDir)
			s, err := m.Settings()
			if err != nil {
				t.Fatal(err)
			}
			if wantClsact := tc.want.ClsactIngress == 1; s.UplinkClsact != wantClsact {
				t.Errorf("settings UplinkClsact = %v, want %v", s.UplinkClsact, wantClsact)
			}
		})
	}
}

func TestRemoveLeavesNothing(t *testing.T) {
	for _, mode := range []string{"tcx", "clsact"} {
		t.Run(mode, func(t *testing.T) {
			node := agenttest.NewNode(t)
			cfg := parseConfig(t, node.Config(nil, "attachMode: "+mode+"\n"))
			a, _ := startAgent(t, node, cfg)
			a.Close()

			log, _ := newLogger(t)
			node.Do(t, func() error { return Remove(cfg, log) })

			if pathExists(t, node.BPFFSDir) {
				t.Errorf("%s still exists", node.BPFFSDir)
			}
			if pathExists(t, node.ConfPath()) {
				t.Errorf("%s still exists", node.ConfPath())
			}
			if routes := listRoutes(t, node); len(routes) != 0 {
				t.Errorf("routes left: %+v", routes)
			}
			if h := countHooks(t, node); h != (agenttest.HookPrograms{}) {
				t.Errorf("uplink programs left: %+v", h)
			}
			// A second removal finds nothing to do.
			node.Do(t, func() error { return Remove(cfg, log) })
		})
	}
}

func TestRemoveKeepsOtherFiles(t *testing.T) {
	node := agenttest.NewNode(t)
	cfg := parseConfig(t, node.Config(nil, ""))
	a, _ := startAgent(t, node, cfg)
	a.Close()
	other := filepath.Join(node.ConfDir, "99-other.conflist")
	if err := os.WriteFile(other, []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	const static = 4 // RTPROT_STATIC
	addRoute(t, node, "10.99.0.0/16", "10.0.1.1", static)

	log, _ := newLogger(t)
	node.Do(t, func() error { return Remove(cfg, log) })
	if !pathExists(t, other) {
		t.Errorf("Remove deleted %s", other)
	}
	want := []kernelRouteInfo{{Dst: "10.99.0.0/16", Gw: "10.0.1.1", LinkIdx: node.UplinkIndex,
		OnLink: true, Protocol: static}}
	if got := listRoutes(t, node); !reflect.DeepEqual(got, want) {
		t.Errorf("routes = %+v, want %+v", got, want)
	}
}
