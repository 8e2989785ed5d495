package cni_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/invoke"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/ferrynet/ferry/pkg/cni"
	"github.com/ferrynet/ferry/pkg/datapath"
)

func TestStatus(t *testing.T) {
	n := newTestNode(t)
	status := func(dir string) error {
		list := confList(t, "1.1.0", n.netConf(podCIDR.String(),
			map[string]any{"bpffsDir": dir}))
		return n.ns.Do(func(ns.NetNS) error {
			return n.cni().GetStatusNetworkList(context.Background(), list)
		})
	}
	assertNotAvailable := func(t *testing.T, err error, wantMsg string) {
		t.Helper()
		if err == nil {
			t.Fatal("STATUS passed")
		}
		if code := cniCode(err); code != 50 {
			t.Errorf("error code %d, want 50 (plugin not available): %v", code, err)
		}
		if !strings.Contains(err.Error(), wantMsg) {
			t.Errorf("STATUS error %q does not contain %q", err, wantMsg)
		}
	}

	t.Run("loaded", func(t *testing.T) {
		if err := status(n.bpffsDir); err != nil {
			t.Errorf("STATUS with a loaded dataplane: %v", err)
		}
	})
	t.Run("nothing pinned", func(t *testing.T) {
		missing := "/sys/fs/bpf/ferry-cnitest-" + randomHex(t, 6)
		assertNotAvailable(t, status(missing), "start ferryd on this node")
	})
	t.Run("settings not written", func(t *testing.T) {
		dir := "/sys/fs/bpf/ferry-cnitest-" + randomHex(t, 6)
		t.Cleanup(func() {
			n.inNode(t, func() error { return datapath.Remove(dir) })
			os.RemoveAll(dir)
		})
		n.loadDataplane(t, dir, false)
		assertNotAvailable(t, status(dir), "ferry dataplane is not loaded under "+dir)
	})
	t.Run("uplink gone", func(t *testing.T) {
		other := newTestNode(t)
		other.run(t, "ip", "link", "del", "eth0")
		list := confList(t, "1.1.0", other.netConf(podCIDR.String(), nil))
		err := other.ns.Do(func(ns.NetNS) error {
			return other.cni().GetStatusNetworkList(context.Background(), list)
		})
		assertNotAvailable(t, err, fmt.Sprintf("find uplink interface %d", other.uplink))
	})
}

// runGC runs CNI GC with the plugin's configuration, version 1.1.0, and the valid
// attachments of the pods in keep.
func (n *testNode) runGC(t *testing.T, keep ...*testPod) error {
	t.Helper()
	valid := []map[string]string{}
	for _, pod := range keep {
		valid = append(valid, map[string]string{"containerID": pod.rt.ContainerID,
			"ifname": pod.rt.IfName})
	}
	conf := n.netConf(podCIDR.String(), map[string]any{
		"cniVersion":                "1.1.0",
		"name":                      networkName,
		"cni.dev/valid-attachments": valid,
	})
	stdin, err := json.Marshal(conf)
	if err != nil {
		t.Fatal(err)
	}
	args := &invoke.Args{
		Command: "GC",
		Path:    strings.Join([]string{pluginDir, "/usr/lib/cni"}, string(os.PathListSeparator)),
	}
	return n.ns.Do(func(ns.NetNS) error {
		return invoke.ExecPluginWithoutResult(context.Background(),
			filepath.Join(pluginDir, "ferry"), stdin, args, nil)
	})
}

func TestGC(t *testing.T) {
	n := newTestNode(t)
	list := confList(t, "1.1.0", n.netConf(podCIDR.String(), nil))
	keep, stale, unmapped, crashed := newTestPod(t), newTestPod(t), newTestPod(t),
		newTestPod(t)
	ips := map[*testPod]netip.Addr{}
	for _, pod := range []*testPod{keep, stale, unmapped, crashed} {
		result, err := current.NewResultFromResult(n.mustAdd(t, list, pod))
		if err != nil {
			t.Fatal(err)
		}
		ips[pod] = netip.MustParseAddr(result.IPs[0].Address.IP.String())
	}
	maps := n.maps(t)

	// unmapped lost its endpoint entry, as an ADD killed between creating the veth and
	// filling the map leaves it: GC finds its veth by the alias.
	if err := maps.DeleteEndpoint(ips[unmapped]); err != nil {
		t.Fatal(err)
	}
	// crashed lost its veth only, as a node crash or a reboot does: its endpoint entry,
	// link pin and reservation stay behind.
	n.run(t, "ip", "link", "del", crashed.hostName())
	// An endpoint entry of no interface and no reservation.
	orphan := datapath.Endpoint{
		IP:      netip.MustParseAddr("10.200.0.200"),
		IfIndex: 99999,
		PodMAC:  net.HardwareAddr{2, 0, 0, 0, 0, 1},
		HostMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2},
	}
	if err := maps.PutEndpoint(orphan); err != nil {
		t.Fatalf("add orphan endpoint: %v", err)
	}
	// A veth of another ferry network, which this network's GC must leave alone.
	foreign := cni.HostVethName(randomHex(t, 32), "eth0")
	n.run(t, "ip", "link", "add", foreign, "type", "veth", "peer", "name", "foreign-peer")
	n.run(t, "ip", "link", "set", foreign, "alias", "ferry:other-network:"+randomHex(t, 8)+
		":eth0")

	if err := n.runGC(t, keep); err != nil {
		t.Fatalf("GC: %v", err)
	}

	for _, pod := range []*testPod{stale, unmapped, crashed} {
		n.assertNothingLeft(t, pod, ips[pod])
	}
	if _, found, _ := maps.LookupEndpoint(orphan.IP); found {
		t.Errorf("orphan endpoint %s still exists", orphan.IP)
	}
	if link := n.hostLink(t, foreign); link == nil {
		t.Errorf("GC deleted veth %s of another network", foreign)
	}
	if owner := n.allocated(t)[ips[keep].String()]; owner != keep.rt.ContainerID {
		t.Errorf("address %s of the valid attachment is reserved for %q, want %s",
			ips[keep], owner, keep.rt.ContainerID)
	}
	if len(n.allocated(t)) != 1 {
		t.Errorf("reservations after GC: %v, want only %s", n.allocated(t), ips[keep])
	}
	if err := n.check(list, keep); err != nil {
		t.Errorf("CHECK of the valid attachment after GC: %v", err)
	}

	// A second GC finds nothing more to do.
	if err := n.runGC(t, keep); err != nil {
		t.Errorf("second GC: %v", err)
	}
	if err := n.check(list, keep); err != nil {
		t.Errorf("CHECK of the valid attachment after the second GC: %v", err)
	}
}
