package lab_test

import (
	"context"
	"strings"
	"testing"

	"github.com/ferrynet/ferry/test/lab"
)

func TestCeilingPingsAcrossVeth(t *testing.T) {
	l := lab.NewTest(t, lab.Options{})
	ctx := context.Background()
	c, err := l.AddCeiling(ctx)
	if err != nil {
		t.Fatalf("add ceiling: %v", err)
	}
	if !nsExists(c.A.NSName) || !nsExists(c.B.NSName) {
		t.Fatalf("namespaces %s and %s must exist", c.A.NSName, c.B.NSName)
	}
	if ttl := pingTTL(t, c.A, c.IPB.String()); ttl != "64" {
		t.Errorf("ping from A to B has TTL %s, want 64: no hop between them", ttl)
	}
	out, err := c.A.Run(ctx, "ip", "-brief", "link")
	if err != nil {
		t.Fatalf("list links of %s: %v", c.A.NSName, err)
	}
	if n := len(strings.Split(strings.TrimSpace(out), "\n")); n != 2 {
		t.Errorf("%s has %d links, want lo and eth0:\n%s", c.A.NSName, n, out)
	}
}

func TestCeilingReservesPodNames(t *testing.T) {
	lab.SkipWithoutPlugins(t, []string{"/usr/lib/cni"}, "bridge", "host-local", "loopback")
	l := lab.NewTest(t, lab.Options{Nodes: lab.CheckNodes()[:1]})
	ctx := context.Background()
	n := l.Node("worker-0")
	if err := n.SetupBaseline(ctx, lab.DefaultClusterCIDR); err != nil {
		t.Fatalf("set up baseline on worker-0: %v", err)
	}
	c, err := l.AddCeiling(ctx)
	if err != nil {
		t.Fatalf("add ceiling: %v", err)
	}
	if _, err := n.AddPod(ctx, "ceiling-a", nil); err == nil {
		t.Errorf("pod named ceiling-a was added, want an error while %s exists", c.A.NSName)
	}
	if _, err := l.AddCeiling(ctx); err == nil {
		t.Errorf("second ceiling was added, want an error")
	}
	if len(l.Pods()) != 0 {
		t.Errorf("lab lists pods %v, want none: the ceiling is no pod", l.Pods())
	}
}

func TestTimedPodLifecycle(t *testing.T) {
	lab.SkipUnlessPrivileged(t)
	lab.SkipWithoutPlugins(t, []string{"/usr/lib/cni"}, "bridge", "host-local", "loopback")
	l := lab.NewTest(t, lab.Options{Nodes: lab.CheckNodes()[:1]})
	ctx := context.Background()
	n := l.Node("worker-0")
	if err := n.SetupBaseline(ctx, lab.DefaultClusterCIDR); err != nil {
		t.Fatalf("set up baseline on worker-0: %v", err)
	}

	if _, _, err := n.AddPodTimed(ctx, "timed", nil); err == nil {
		t.Errorf("AddPodTimed without a conflist succeeded, want an error")
	}
	pod, took, err := n.AddPodTimed(ctx, "timed", n.BaselineConflist())
	if err != nil {
		t.Fatalf("add pod timed: %v", err)
	}
	if took <= 0 {
		t.Errorf("CNI ADD took %v, want a positive duration", took)
	}
	if got := pod.IP.String(); got != "10.200.0.2" {
		t.Errorf("pod timed has IP %s, want 10.200.0.2", got)
	}
	if l.Pod("timed") != pod {
		t.Errorf("lab does not list pod timed after AddPodTimed")
	}
	if err := n.CheckPod(ctx, pod); err != nil {
		t.Errorf("CNI CHECK of pod timed: %v", err)
	}

	took, err = n.DelPodTimed(ctx, pod)
	if err != nil {
		t.Fatalf("delete pod timed: %v", err)
	}
	if took <= 0 {
		t.Errorf("CNI DEL took %v, want a positive duration", took)
	}
	if l.Pod("timed") != nil {
		t.Errorf("lab still lists pod timed after DelPodTimed")
	}
	if nsExists(pod.NSName) {
		t.Errorf("namespace %s still exists after DelPodTimed", pod.NSName)
	}
}
