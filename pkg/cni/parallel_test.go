package cni_test

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
)

// parallelPods is how many pods TestParallelAddDel adds and deletes at once.
const parallelPods = 50

func TestParallelAddDel(t *testing.T) {
	n := newTestNode(t)
	list := n.defaultList(t)
	pods := make([]*testPod, parallelPods)
	for i := range pods {
		pods[i] = newTestPod(t)
	}

	ips := make([]netip.Addr, parallelPods)
	errs := make([]error, parallelPods)
	var wg sync.WaitGroup
	for i, pod := range pods {
		wg.Go(func() {
			raw, err := n.add(list, pod)
			if err != nil {
				errs[i] = err
				return
			}
			result, err := current.NewResultFromResult(raw)
			if err != nil {
				errs[i] = err
				return
			}
			ips[i] = netip.MustParseAddr(result.IPs[0].Address.IP.String())
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("ADD of pod %d: %v", i, err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	seen := map[netip.Addr]int{}
	for i, ip := range ips {
		if j, ok := seen[ip]; ok {
			t.Errorf("pods %d and %d both have %s", j, i, ip)
		}
		seen[ip] = i
		if !podCIDR.Contains(ip) {
			t.Errorf("pod %d has %s, outside %s", i, ip, podCIDR)
		}
	}
	maps := n.maps(t)
	eps, err := maps.Endpoints()
	if err != nil {
		t.Fatal(err)
	}
	if len(eps) != parallelPods {
		t.Errorf("%d endpoints after %d ADDs", len(eps), parallelPods)
	}
	if got := len(n.allocated(t)); got != parallelPods {
		t.Errorf("%d host-local reservations after %d ADDs", got, parallelPods)
	}
	if got := len(n.hostVeths(t)); got != parallelPods {
		t.Errorf("%d host veths after %d ADDs", got, parallelPods)
	}
	for i, pod := range pods[:3] {
		if err := n.check(list, pod); err != nil {
			t.Errorf("CHECK of pod %d: %v", i, err)
		}
	}

	for i, pod := range pods {
		wg.Go(func() { errs[i] = n.del(list, pod) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("DEL of pod %d: %v", i, err)
		}
	}

	if veths := n.hostVeths(t); len(veths) != 0 {
		t.Errorf("host veths left after DEL: %v", veths)
	}
	if eps, err := maps.Endpoints(); err != nil || len(eps) != 0 {
		t.Errorf("endpoints left after DEL: %v, error %v", eps, err)
	}
	if reserved := n.allocated(t); len(reserved) != 0 {
		t.Errorf("reservations left after DEL: %v", reserved)
	}
	routes := n.run(t, "ip", "-4", "route", "show", "root", podCIDR.String())
	if strings.TrimSpace(routes) != "" {
		t.Errorf("routes into %s left after DEL:\n%s", podCIDR, routes)
	}
	pins, err := os.ReadDir(filepath.Join(n.bpffsDir, "links"))
	if err != nil {
		t.Fatal(err)
	}
	for _, pin := range pins {
		if strings.HasPrefix(pin.Name(), "pod_") {
			t.Errorf("link pin %s left after DEL", pin.Name())
		}
	}
}

// hostVeths returns the names of the node's interfaces that ferry's host veths could have.
func (n *testNode) hostVeths(t *testing.T) []string {
	t.Helper()
	var names []string
	n.inNode(t, func() error {
		links, err := netlink.LinkList()
		if err != nil {
			return fmt.Errorf("list interfaces: %w", err)
		}
		for _, l := range links {
			if strings.HasPrefix(l.Attrs().Name, "fy") {
				names = append(names, l.Attrs().Name)
			}
		}
		return nil
	})
	return names
}
