package lab_test

import (
	"context"
	"strings"
	"testing"

	"github.com/ferrynet/ferry/test/lab"
)

// TestBaselineChecks builds the hand-wired baseline on three nodes and runs all checks.
func TestBaselineChecks(t *testing.T) {
	lab.SkipUnlessPrivileged(t)
	lab.SkipWithoutPlugins(t, []string{"/usr/lib/cni"}, "bridge", "host-local", "loopback")
	l := lab.NewTest(t, lab.Options{Nodes: lab.CheckNodes()})
	ctx := context.Background()

	dp := lab.Baseline(lab.DefaultClusterCIDR)
	if err := dp.Setup(ctx, l); err != nil {
		t.Fatalf("set up baseline: %v", err)
	}
	var out strings.Builder
	results := lab.RunChecks(ctx, l, lab.CheckEnv{Conflist: dp.Conflist}, &out)
	t.Logf("check output:\n%s", out.String())

	if len(results) != 7 {
		t.Fatalf("RunChecks returned %d results, expected 7", len(results))
	}
	for i, r := range results {
		if !r.Passed {
			t.Errorf("check %d (%s) failed: %s", i+1, r.Name, strings.Join(r.Problems, "; "))
		}
	}
}

// TestBaselinePodLifecycle adds, checks and deletes a pod with the conflist from net.d.
func TestBaselinePodLifecycle(t *testing.T) {
	lab.SkipUnlessPrivileged(t)
	lab.SkipWithoutPlugins(t, []string{"/usr/lib/cni"}, "bridge", "host-local", "loopback")
	l := lab.NewTest(t, lab.Options{Nodes: lab.CheckNodes()[:1]})
	ctx := context.Background()
	n := l.Node("worker-0")
	if err := n.SetupBaseline(ctx, lab.DefaultClusterCIDR); err != nil {
		t.Fatalf("set up baseline on worker-0: %v", err)
	}

	first, err := n.AddPod(ctx, "first", nil)
	if err != nil {
		t.Fatalf("add pod first: %v", err)
	}
	if got := first.IP.String(); got != "10.200.0.2" {
		t.Errorf("pod first has IP %s, expected 10.200.0.2", got)
	}
	if first.Result == nil || len(first.Result.IPs) != 1 {
		t.Errorf("pod first has CNI result %+v, expected one IP", first.Result)
	}
	if err := n.CheckPod(ctx, first); err != nil {
		t.Errorf("CNI CHECK of pod first: %v", err)
	}
	if _, err := n.AddPod(ctx, "first", nil); err == nil {
		t.Errorf("second pod named first was added, expected an error")
	}
	out, err := first.Run(ctx, "ip", "-brief", "link", "show", "lo")
	if err != nil || !strings.Contains(out, "UP") {
		t.Errorf("lo in pod first is not up: %q, %v", out, err)
	}

	second, err := n.AddPod(ctx, "second", nil)
	if err != nil {
		t.Fatalf("add pod second: %v", err)
	}
	if got := second.IP.String(); got != "10.200.0.3" {
		t.Errorf("pod second has IP %s, expected 10.200.0.3", got)
	}

	if err := n.DelPod(ctx, first); err != nil {
		t.Errorf("delete pod first: %v", err)
	}
	if l.Pod("first") != nil {
		t.Errorf("lab still lists pod first after DelPod")
	}
	if nsExists(first.NSName) {
		t.Errorf("namespace %s still exists after DelPod", first.NSName)
	}
	// host-local hands out the released address again only after the rest of the range,
	// so the third pod gets the next address.
	third, err := n.AddPod(ctx, "third", nil)
	if err != nil {
		t.Fatalf("add pod third: %v", err)
	}
	if got := third.IP.String(); got != "10.200.0.4" {
		t.Errorf("pod third has IP %s, expected 10.200.0.4", got)
	}
}
