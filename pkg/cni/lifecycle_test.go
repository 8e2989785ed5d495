package cni_test

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/plugins/pkg/ns"

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

	if err := status(n.bpffsDir); err != nil {
		t.Errorf("STATUS with a loaded dataplane: %v", err)
	}

	missing := "/sys/fs/bpf/ferry-cnitest-" + randomHex(t, 6)
	err := status(missing)
	if err == nil {
		t.Fatal("STATUS passed without a dataplane")
	}
	if code := cniCode(err); code != 50 {
		t.Errorf("error code %d, want 50 (plugin not available): %v", code, err)
	}
	if !strings.Contains(err.Error(), "start ferryd on this node") {
		t.Errorf("STATUS error %q does not say to start ferryd", err)
	}
}

func TestGC(t *testing.T) {
	n := newTestNode(t)
	list := confList(t, "1.1.0", n.netConf(podCIDR.String(), nil))
	keep, stale := newTestPod(t), newTestPod(t)
	n.mustAdd(t, list, keep)
	n.mustAdd(t, list, stale)
	staleLink := n.hostLink(t, stale.hostName())
	if staleLink == nil {
		t.Fatalf("host veth %s missing after ADD", stale.hostName())
	}

	// An entry whose interface is gone, as a crash between veth deletion and map cleanup
	// leaves it.
	orphan := datapath.Endpoint{
		IP:      secondPod.Next(),
		IfIndex: 99999,
		PodMAC:  net.HardwareAddr{2, 0, 0, 0, 0, 1},
		HostMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2},
	}
	if err := n.maps(t).PutEndpoint(orphan); err != nil {
		t.Fatalf("add orphan endpoint: %v", err)
	}

	conf := n.netConf(podCIDR.String(), map[string]any{
		"cniVersion": "1.1.0",
		"name":       networkName,
		"cni.dev/valid-attachments": []map[string]string{
			{"containerID": keep.rt.ContainerID, "ifname": keep.rt.IfName},
		},
	})
	stdin, err := json.Marshal(conf)
	if err != nil {
		t.Fatal(err)
	}
	args := &invoke.Args{
		Command: "GC",
		Path:    strings.Join([]string{pluginDir, "/usr/lib/cni"}, string(os.PathListSeparator)),
	}
	n.inNode(t, func() error {
		return invoke.ExecPluginWithoutResult(context.Background(),
			filepath.Join(pluginDir, "ferry"), stdin, args, nil)
	})

	if link := n.hostLink(t, stale.hostName()); link != nil {
		t.Errorf("host veth %s of the stale attachment still exists", stale.hostName())
	}
	if _, err := os.Stat(n.linkPinPath(stale.hostName())); err == nil {
		t.Errorf("link pin of the stale attachment still exists")
	}
	maps := n.maps(t)
	if _, found, _ := maps.LookupEndpoint(secondPod); found {
		t.Errorf("endpoint %s of the stale attachment still exists", secondPod)
	}
	if _, found, _ := maps.LookupEndpoint(orphan.IP); found {
		t.Errorf("orphan endpoint %s still exists", orphan.IP)
	}
	if err := n.check(list, keep); err != nil {
		t.Errorf("CHECK of the valid attachment after GC: %v", err)
	}
}
