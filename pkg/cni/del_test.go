package cni_test

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestDelRemovesEverything(t *testing.T) {
	n := newTestNode(t)
	list := n.defaultList(t)
	pod, other := newTestPod(t), newTestPod(t)
	n.mustAdd(t, list, pod)
	n.mustAdd(t, list, other)

	if err := n.del(list, pod); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	n.assertNothingLeft(t, pod, firstPod)

	// The other pod keeps its network.
	if _, found, err := n.maps(t).LookupEndpoint(secondPod); err != nil || !found {
		t.Errorf("endpoint %s of the other pod: found %v, error %v", secondPod, found, err)
	}
	if err := n.check(list, other); err != nil {
		t.Errorf("CHECK of the other pod: %v", err)
	}
}

func TestDelIdempotent(t *testing.T) {
	tests := []struct {
		name string
		// prepare runs after ADD, when added is true, and before DEL.
		prepare func(t *testing.T, n *testNode, pod *testPod)
		added   bool
	}{
		{
			name:    "twice in a row",
			added:   true,
			prepare: func(t *testing.T, n *testNode, pod *testPod) { n.mustDel(t, pod) },
		},
		{
			name:  "netns gone",
			added: true,
			prepare: func(t *testing.T, _ *testNode, pod *testPod) {
				removeNetNS(t, pod.ns)
			},
		},
		{
			name:  "CNI_NETNS empty",
			added: true,
			prepare: func(_ *testing.T, _ *testNode, pod *testPod) {
				pod.rt.NetNS = ""
			},
		},
		{
			name:    "unknown container",
			prepare: func(*testing.T, *testNode, *testPod) {},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newTestNode(t)
			pod := newTestPod(t)
			if tt.added {
				n.mustAdd(t, n.defaultList(t), pod)
			}
			tt.prepare(t, n, pod)

			if err := n.del(n.defaultList(t), pod); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			n.assertNothingLeft(t, pod, firstPod)
		})
	}
}

func TestDelWithoutDataplane(t *testing.T) {
	n := newTestNode(t)
	pod := newTestPod(t)
	n.mustAdd(t, n.defaultList(t), pod)

	missing := "/sys/fs/bpf/ferry-cnitest-" + randomHex(t, 6)
	list := confList(t, "1.0.0", n.netConf(podCIDR.String(), map[string]any{"bpffsDir": missing}))
	if err := n.del(list, pod); err != nil {
		t.Fatalf("DEL with no dataplane under %s: %v", missing, err)
	}
	if owner, ok := n.allocated(t)[firstPod.String()]; ok {
		t.Errorf("address %s still reserved for %s", firstPod, owner)
	}
	if link := n.hostLink(t, pod.hostName()); link != nil {
		t.Errorf("host veth %s still exists", pod.hostName())
	}
}

// mustDel runs CNI DEL with the default configuration list and fails the test on error.
func (n *testNode) mustDel(t *testing.T, pod *testPod) {
	t.Helper()
	if err := n.del(n.defaultList(t), pod); err != nil {
		t.Fatalf("CNI DEL of container %s: %v", pod.rt.ContainerID, err)
	}
}

func TestDelKeepsReusedAddress(t *testing.T) {
	n := newTestNode(t)
	list := n.defaultList(t)
	first := newTestPod(t)
	n.mustAdd(t, list, first)

	// The first pod's namespace goes and its address is released out of band, as after a
	// node crash; the next pod gets the same address.
	removeNetNS(t, first.ns)
	waitFor(t, "host veth of the removed pod to go", func() bool {
		return n.hostLink(t, first.hostName()) == nil
	})
	second := newTestPod(t)
	n.releaseReservation(t, firstPod)
	n.mustAdd(t, list, second)
	if ep, found, err := n.maps(t).LookupEndpoint(firstPod); err != nil || !found ||
		ep.IfIndex != n.hostLink(t, second.hostName()).Attrs().Index {
		t.Fatalf("endpoint %s is not the second pod's: %+v, found %v, error %v", firstPod, ep,
			found, err)
	}

	// The first pod's DEL, whose prevResult names the address, leaves the second's entry.
	if err := n.del(list, first); err != nil {
		t.Fatalf("DEL of the first pod: %v", err)
	}
	if err := n.check(list, second); err != nil {
		t.Errorf("CHECK of the pod that reuses %s: %v", firstPod, err)
	}
}

// releaseReservation deletes host-local's reservation of ip and its record of the last
// reserved address, so that host-local hands out ip next.
func (n *testNode) releaseReservation(t *testing.T, ip netip.Addr) {
	t.Helper()
	dir := filepath.Join(n.dataDir, networkName)
	for _, name := range []string{ip.String(), "last_reserved_ip.0"} {
		if err := os.Remove(filepath.Join(dir, name)); err != nil {
			t.Fatalf("remove host-local file %s: %v", name, err)
		}
	}
}

// waitFor polls cond for up to five seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
