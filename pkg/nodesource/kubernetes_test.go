package nodesource_test

import (
	"context"
	"net/netip"
	"reflect"
	"runtime"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ferrynet/ferry/pkg/nodesource"
	"github.com/ferrynet/ferry/pkg/nodesource/nodesourcetest"
)

// eventTimeout bounds the wait for a change to reach the source. It is a
// deadline for a hung informer, not a speed requirement.
const eventTimeout = 10 * time.Second

func addr(s string) netip.Addr     { return netip.MustParseAddr(s) }
func prefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// startSource starts a Kubernetes source on client and waits until the
// informer watches, so that the test's changes reach it.
func startSource(t *testing.T, client *nodesourcetest.Client) *nodesource.Kubernetes {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	src := nodesource.NewKubernetes(client)
	if err := src.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	select {
	case <-client.Watching:
	case <-time.After(eventTimeout):
		t.Fatal("the informer did not watch the nodes")
	}
	return src
}

// waitForNodes waits for a change signal until Nodes returns want.
func waitForNodes(t *testing.T, src nodesource.Source, want []nodesource.Node) {
	t.Helper()
	deadline := time.After(eventTimeout)
	for {
		got := src.Nodes()
		if reflect.DeepEqual(got, want) {
			return
		}
		select {
		case <-src.Changed():
		case <-deadline:
			t.Fatalf("nodes = %+v, want %+v", got, want)
		}
	}
}

func TestKubernetesListsNodes(t *testing.T) {
	client := nodesourcetest.NewClient(
		nodesourcetest.Node("worker-1", addr("10.0.1.21"), prefix("10.200.1.0/24")),
		nodesourcetest.Node("worker-0", addr("10.0.1.20"), prefix("10.200.0.0/24")),
	)
	src := startSource(t, client)
	want := []nodesource.Node{
		{Name: "worker-0", IP: addr("10.0.1.20"), PodCIDR: prefix("10.200.0.0/24")},
		{Name: "worker-1", IP: addr("10.0.1.21"), PodCIDR: prefix("10.200.1.0/24")},
	}
	// Start returns after the initial list: no wait is needed.
	if got := src.Nodes(); !reflect.DeepEqual(got, want) {
		t.Errorf("nodes after Start = %+v, want %+v", got, want)
	}
}

func TestKubernetesFollowsChanges(t *testing.T) {
	client := nodesourcetest.NewClient(
		nodesourcetest.Node("worker-0", addr("10.0.1.20"), prefix("10.200.0.0/24")))
	src := startSource(t, client)
	nodes := client.CoreV1().Nodes()
	ctx := context.Background()

	// Added.
	w1 := nodesourcetest.Node("worker-1", addr("10.0.1.21"), prefix("10.200.1.0/24"))
	if _, err := nodes.Create(ctx, w1, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create worker-1: %v", err)
	}
	self := nodesource.Node{Name: "worker-0", IP: addr("10.0.1.20"),
		PodCIDR: prefix("10.200.0.0/24")}
	waitForNodes(t, src, []nodesource.Node{self,
		{Name: "worker-1", IP: addr("10.0.1.21"), PodCIDR: prefix("10.200.1.0/24")}})

	// Re-addressed: a new InternalIP and pod range.
	w1 = nodesourcetest.Node("worker-1", addr("10.0.1.31"), prefix("10.200.7.0/24"))
	if _, err := nodes.Update(ctx, w1, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("update worker-1: %v", err)
	}
	waitForNodes(t, src, []nodesource.Node{self,
		{Name: "worker-1", IP: addr("10.0.1.31"), PodCIDR: prefix("10.200.7.0/24")}})

	// Removed.
	if err := nodes.Delete(ctx, "worker-1", metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete worker-1: %v", err)
	}
	waitForNodes(t, src, []nodesource.Node{self})
}

func TestKubernetesPodCIDRAssignedLate(t *testing.T) {
	client := nodesourcetest.NewClient(
		nodesourcetest.Node("worker-0", addr("10.0.1.20"), netip.Prefix{}))
	src := startSource(t, client)
	got := src.Nodes()
	if len(got) != 1 || got[0].Complete() {
		t.Fatalf("nodes = %+v, want worker-0 without a pod range", got)
	}

	node := nodesourcetest.Node("worker-0", addr("10.0.1.20"), prefix("10.200.0.0/24"))
	_, err := client.CoreV1().Nodes().Update(context.Background(), node, metav1.UpdateOptions{})
	if err != nil {
		t.Fatalf("update worker-0: %v", err)
	}
	waitForNodes(t, src, []nodesource.Node{
		{Name: "worker-0", IP: addr("10.0.1.20"), PodCIDR: prefix("10.200.0.0/24")}})
}

func TestKubernetesIgnoresOtherChanges(t *testing.T) {
	client := nodesourcetest.NewClient(
		nodesourcetest.Node("worker-0", addr("10.0.1.20"), prefix("10.200.0.0/24")))
	src := startSource(t, client)
	// Drain the signal of the initial list.
	select {
	case <-src.Changed():
	default:
	}

	node := nodesourcetest.Node("worker-0", addr("10.0.1.20"), prefix("10.200.0.0/24"))
	node.Labels["team"] = "network"
	if _, err := client.CoreV1().Nodes().Update(context.Background(), node,
		metav1.UpdateOptions{}); err != nil {
		t.Fatalf("update worker-0: %v", err)
	}
	// A second, relevant change marks when the first has been processed.
	w1 := nodesourcetest.Node("worker-1", addr("10.0.1.21"), prefix("10.200.1.0/24"))
	if _, err := client.CoreV1().Nodes().Create(context.Background(), w1,
		metav1.CreateOptions{}); err != nil {
		t.Fatalf("create worker-1: %v", err)
	}
	select {
	case <-src.Changed():
	case <-time.After(eventTimeout):
		t.Fatal("no change signal for the new node")
	}
	select {
	case <-src.Changed():
		t.Errorf("a label change signalled a node change")
	default:
	}
}

func TestFromNodePicksIPv4(t *testing.T) {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "dual"},
		Spec: corev1.NodeSpec{
			PodCIDR:  "fd00:200::/64",
			PodCIDRs: []string{"fd00:200::/64", "10.200.4.0/24"},
		},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeExternalIP, Address: "203.0.113.4"},
			{Type: corev1.NodeInternalIP, Address: "fd00::4"},
			{Type: corev1.NodeInternalIP, Address: "10.0.1.24"},
		}},
	}
	want := nodesource.Node{Name: "dual", IP: addr("10.0.1.24"), PodCIDR: prefix("10.200.4.0/24")}
	if got := nodesource.FromNode(node); got != want {
		t.Errorf("FromNode = %+v, want %+v", got, want)
	}
}

func TestFromNodeOldPodCIDRField(t *testing.T) {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "old"},
		Spec:       corev1.NodeSpec{PodCIDR: "10.200.5.0/24"},
	}
	got := nodesource.FromNode(node)
	if got.PodCIDR != prefix("10.200.5.0/24") || got.IP.IsValid() {
		t.Errorf("FromNode = %+v, want pod range 10.200.5.0/24 and no IP", got)
	}
}

func TestStaticSetSignalsChanges(t *testing.T) {
	a := nodesource.Node{Name: "a", IP: addr("10.0.1.1"), PodCIDR: prefix("10.200.1.0/24")}
	b := nodesource.Node{Name: "b", IP: addr("10.0.1.2"), PodCIDR: prefix("10.200.2.0/24")}
	src := nodesource.NewStatic([]nodesource.Node{b, a})
	if got := src.Nodes(); !reflect.DeepEqual(got, []nodesource.Node{a, b}) {
		t.Errorf("nodes = %+v, want sorted by name", got)
	}
	src.Set([]nodesource.Node{a, b})
	select {
	case <-src.Changed():
		t.Errorf("Set with the same nodes signalled a change")
	default:
	}
	src.Set([]nodesource.Node{a})
	select {
	case <-src.Changed():
	default:
		t.Errorf("Set with fewer nodes signalled no change")
	}
}

// BenchmarkNodeSource5000 measures the start of the Kubernetes source on a
// cluster of 5,000 nodes: the time from Start to the complete list, and the
// heap that the source and its informer keep (heap-bytes/op, measured after
// a garbage collection).
func BenchmarkNodeSource5000(b *testing.B) {
	const count = 5000
	for b.Loop() {
		b.StopTimer()
		client := nodesourcetest.NewClient(nodesourcetest.Nodes(count)...)
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		ctx, cancel := context.WithCancel(context.Background())
		b.StartTimer()

		src := nodesource.NewKubernetes(client)
		if err := src.Start(ctx); err != nil {
			b.Fatalf("Start: %v", err)
		}
		nodes := src.Nodes()

		b.StopTimer()
		if len(nodes) != count {
			b.Fatalf("listed %d nodes, want %d", len(nodes), count)
		}
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc)-float64(before.HeapAlloc), "heap-bytes/op")
		runtime.KeepAlive(src)
		cancel()
		b.StartTimer()
	}
}
