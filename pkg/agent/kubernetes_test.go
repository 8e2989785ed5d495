package agent

import (
	"context"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ferrynet/ferry/pkg/agent/agenttest"
	"github.com/ferrynet/ferry/pkg/datapath"
	"github.com/ferrynet/ferry/pkg/nodesource"
	"github.com/ferrynet/ferry/pkg/nodesource/nodesourcetest"
)

func addr(s string) netip.Addr     { return netip.MustParseAddr(s) }
func prefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// runWithKubernetes runs the agent on node with the Kubernetes source on a
// fake API that holds the given nodes, and waits until the informer watches.
func runWithKubernetes(t *testing.T, node *agenttest.Node,
	client *nodesourcetest.Client) *runningAgent {
	t.Helper()
	cfg := parseConfig(t, kubernetesConfig(node))
	r := runAgent(t, node, cfg, Options{NodeSource: nodesource.NewKubernetes(client)})
	select {
	case <-client.Watching:
	case err := <-r.done:
		t.Fatalf("Run returned before watching nodes: %v", err)
	}
	return r
}

func TestKubernetesNodesFollowAPI(t *testing.T) {
	node := agenttest.NewNode(t)
	client := nodesourcetest.NewClient(
		nodesourcetest.Node("worker-0", addr("10.0.1.20"), prefix("10.200.0.0/24")),
		nodesourcetest.Node("worker-1", addr("10.0.1.21"), prefix("10.200.1.0/24")),
	)
	r := runWithKubernetes(t, node, client)
	r.waitReady(t)
	m := openMaps(t, node.BPFFSDir)
	nodes := client.CoreV1().Nodes()
	ctx := context.Background()

	if got, want := sortedNodeRoutes(t, m), []datapath.NodeRoute{
		nodeRoute("10.200.1.0/24", "10.0.1.21")}; !reflect.DeepEqual(got, want) {
		t.Errorf("node routes at start = %v, want %v", got, want)
	}
	settings, err := m.Settings()
	if err != nil {
		t.Fatal(err)
	}
	if settings.PodCIDR != prefix("10.200.0.0/24") {
		t.Errorf("settings pod CIDR = %s, want this node's 10.200.0.0/24", settings.PodCIDR)
	}

	// Added: a node on the subnet gets a map entry and an on-link route.
	w2 := nodesourcetest.Node("worker-2", addr("10.0.1.22"), prefix("10.200.2.0/24"))
	if _, err := nodes.Create(ctx, w2, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "worker-2's route", func() bool {
		return slices.Contains(sortedNodeRoutes(t, m), nodeRoute("10.200.2.0/24", "10.0.1.22"))
	})
	waitFor(t, "worker-2's kernel route", func() bool {
		return slices.Contains(listRoutes(t, node), ferryRoute(node, "10.200.2.0/24", "10.0.1.22"))
	})
	if !slices.Contains(sortedExclusions(t, m), "10.0.1.22/32") {
		t.Errorf("worker-2's address is not excluded from the masquerade: %v",
			sortedExclusions(t, m))
	}

	// Re-addressed: a new InternalIP and pod range replace the old ones.
	w2 = nodesourcetest.Node("worker-2", addr("10.0.1.32"), prefix("10.200.9.0/24"))
	if _, err := nodes.Update(ctx, w2, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	want := []datapath.NodeRoute{nodeRoute("10.200.1.0/24", "10.0.1.21"),
		nodeRoute("10.200.9.0/24", "10.0.1.32")}
	waitFor(t, "worker-2's new route", func() bool {
		return reflect.DeepEqual(sortedNodeRoutes(t, m), want)
	})
	wantKernel := []kernelRouteInfo{ferryRoute(node, "10.200.1.0/24", "10.0.1.21"),
		ferryRoute(node, "10.200.9.0/24", "10.0.1.32")}
	waitFor(t, "worker-2's new kernel route", func() bool {
		return reflect.DeepEqual(listRoutes(t, node), wantKernel)
	})

	// Removed.
	if err := nodes.Delete(ctx, "worker-2", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "worker-2's route to go", func() bool {
		return reflect.DeepEqual(sortedNodeRoutes(t, m),
			[]datapath.NodeRoute{nodeRoute("10.200.1.0/24", "10.0.1.21")})
	})
	waitFor(t, "worker-2's kernel route to go", func() bool {
		return reflect.DeepEqual(listRoutes(t, node),
			[]kernelRouteInfo{ferryRoute(node, "10.200.1.0/24", "10.0.1.21")})
	})
	for _, msg := range []string{"node added", "node changed", "node removed"} {
		if !strings.Contains(r.logs.String(), msg) {
			t.Errorf("log has no %q line", msg)
		}
	}
}

func TestKubernetesWaitsForOwnPodCIDR(t *testing.T) {
	node := agenttest.NewNode(t)
	client := nodesourcetest.NewClient(
		nodesourcetest.Node("worker-0", addr("10.0.1.20"), netip.Prefix{}),
		nodesourcetest.Node("worker-1", addr("10.0.1.21"), prefix("10.200.1.0/24")),
	)
	r := runWithKubernetes(t, node, client)
	waitFor(t, "the log line about the missing pod CIDR", func() bool {
		return strings.Contains(r.logs.String(), "waiting for this node")
	})
	if !strings.Contains(r.logs.String(), "no IPv4 pod CIDR") {
		t.Errorf("the wait's log line does not name the missing pod CIDR:\n%s", r.logs)
	}
	if pathExists(t, node.ConfPath()) {
		t.Errorf("CNI configuration written before this node has a pod CIDR")
	}
	if status, body := httpGet(t, node, "/readyz"); status != 503 {
		t.Errorf("/readyz while waiting = %d %q, want 503", status, body)
	}
	if status, _ := httpGet(t, node, "/healthz"); status != 200 {
		t.Errorf("/healthz while waiting = %d, want 200", status)
	}

	w0 := nodesourcetest.Node("worker-0", addr("10.0.1.20"), prefix("10.200.0.0/24"))
	if _, err := client.CoreV1().Nodes().Update(context.Background(), w0,
		metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	r.waitReady(t)
	conf := readConflist(t, node.ConfPath())
	ipam := conf["plugins"].([]any)[0].(map[string]any)["ipam"].(map[string]any)
	subnet := ipam["ranges"].([]any)[0].([]any)[0].(map[string]any)["subnet"]
	if subnet != "10.200.0.0/24" {
		t.Errorf("CNI configuration allocates from %v, want the assigned 10.200.0.0/24", subnet)
	}
	if status, body := httpGet(t, node, "/readyz"); status != 200 {
		t.Errorf("/readyz after start = %d %q, want 200", status, body)
	}
}

func TestKubernetesKeepsOwnRangeUntilRestart(t *testing.T) {
	node := agenttest.NewNode(t)
	client := nodesourcetest.NewClient(
		nodesourcetest.Node("worker-0", addr("10.0.1.20"), prefix("10.200.0.0/24")),
		nodesourcetest.Node("worker-1", addr("10.0.1.21"), prefix("10.200.1.0/24")),
	)
	r := runWithKubernetes(t, node, client)
	r.waitReady(t)
	m := openMaps(t, node.BPFFSDir)

	w0 := nodesourcetest.Node("worker-0", addr("10.0.1.20"), prefix("10.200.5.0/24"))
	if _, err := client.CoreV1().Nodes().Update(context.Background(), w0,
		metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the log line about the changed pod CIDR", func() bool {
		return strings.Contains(r.logs.String(), "restart ferryd to apply it")
	})
	settings, err := m.Settings()
	if err != nil {
		t.Fatal(err)
	}
	if settings.PodCIDR != prefix("10.200.0.0/24") {
		t.Errorf("settings pod CIDR = %s, want the running 10.200.0.0/24", settings.PodCIDR)
	}
	if got := sortedNodeRoutes(t, m); !reflect.DeepEqual(got,
		[]datapath.NodeRoute{nodeRoute("10.200.1.0/24", "10.0.1.21")}) {
		t.Errorf("node routes = %v, want worker-1's only", got)
	}
}

func TestKubernetesSkipsInvalidNodes(t *testing.T) {
	node := agenttest.NewNode(t)
	client := nodesourcetest.NewClient(
		nodesourcetest.Node("worker-0", addr("10.0.1.20"), prefix("10.200.0.0/24")),
		// Outside the cluster CIDR, overlapping worker-0, and without an address.
		nodesourcetest.Node("worker-5", addr("10.0.1.25"), prefix("10.99.5.0/24")),
		nodesourcetest.Node("worker-6", addr("10.0.1.26"), prefix("10.200.0.0/25")),
		nodesourcetest.Node("worker-7", netip.Addr{}, prefix("10.200.7.0/24")),
	)
	r := runWithKubernetes(t, node, client)
	r.waitReady(t)
	m := openMaps(t, node.BPFFSDir)
	if got := sortedNodeRoutes(t, m); len(got) != 0 {
		t.Errorf("node routes = %v, want none", got)
	}
	for _, want := range []string{"node=worker-5", "outside clusterCIDR", "node=worker-6",
		"overlaps", "node=worker-7", "no IPv4 InternalIP"} {
		if !strings.Contains(r.logs.String(), want) {
			t.Errorf("log does not mention %q", want)
		}
	}
}

// TestKubernetesNewNodeCannotTakeRoute adds nodes whose names sort before worker-1's and
// whose pod range or address are worker-1's. worker-1 is routed already, so it keeps its
// route and the newcomers are skipped. Deleting this node logs why ferryd keeps its range.
func TestKubernetesNewNodeCannotTakeRoute(t *testing.T) {
	node := agenttest.NewNode(t)
	client := nodesourcetest.NewClient(
		nodesourcetest.Node("worker-0", addr("10.0.1.20"), prefix("10.200.0.0/24")),
		nodesourcetest.Node("worker-1", addr("10.0.1.21"), prefix("10.200.1.0/24")),
	)
	r := runWithKubernetes(t, node, client)
	r.waitReady(t)
	m := openMaps(t, node.BPFFSDir)
	nodes := client.CoreV1().Nodes()
	ctx := context.Background()
	want := []datapath.NodeRoute{nodeRoute("10.200.1.0/24", "10.0.1.21")}

	for _, n := range []struct{ name, ip, cidr string }{
		{"a-same-range", "10.0.2.50", "10.200.1.0/24"},
		{"a-same-address", "10.0.1.21", "10.200.50.0/24"},
	} {
		if _, err := nodes.Create(ctx, nodesourcetest.Node(n.name, addr(n.ip), prefix(n.cidr)),
			metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, n.name+" skipped", func() bool {
			return strings.Contains(r.logs.String(), "node="+n.name)
		})
		if got := sortedNodeRoutes(t, m); !reflect.DeepEqual(got, want) {
			t.Errorf("node routes after %s = %v, want worker-1's alone", n.name, got)
		}
	}
	if strings.Contains(r.logs.String(), "node=worker-1 reason") {
		t.Errorf("worker-1 was skipped:\n%s", r.logs)
	}

	// A routed node that moves into worker-1's range is the one skipped.
	w2 := nodesourcetest.Node("worker-2", addr("10.0.1.22"), prefix("10.200.2.0/24"))
	if _, err := nodes.Create(ctx, w2, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	want = append(want, nodeRoute("10.200.2.0/24", "10.0.1.22"))
	waitFor(t, "worker-2's route", func() bool {
		return reflect.DeepEqual(sortedNodeRoutes(t, m), want)
	})
	a1 := nodesourcetest.Node("a-same-range", addr("10.0.2.50"), prefix("10.200.2.0/24"))
	if err := nodes.Delete(ctx, "a-same-range", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	a1.Spec.PodCIDR, a1.Spec.PodCIDRs = "10.200.60.0/24", []string{"10.200.60.0/24"}
	if _, err := nodes.Create(ctx, a1, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a-same-range's own route", func() bool {
		return slices.Contains(sortedNodeRoutes(t, m), nodeRoute("10.200.60.0/24", "10.0.2.50"))
	})
	a1.Spec.PodCIDR, a1.Spec.PodCIDRs = "10.200.2.0/24", []string{"10.200.2.0/24"}
	if _, err := nodes.Update(ctx, a1, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a-same-range skipped after its move", func() bool {
		return strings.Contains(r.logs.String(), "node=a-same-range reason=\"pod CIDR 10.200.2.0/24")
	})
	if got := sortedNodeRoutes(t, m); !reflect.DeepEqual(got, want) {
		t.Errorf("node routes after a-same-range moved = %v, want %v", got, want)
	}

	// This node's new range, which applies only at a restart, takes no other node's route.
	w0 := nodesourcetest.Node("worker-0", addr("10.0.1.20"), prefix("10.200.1.0/24"))
	if _, err := nodes.Update(ctx, w0, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the log line about this node's new range", func() bool {
		return strings.Contains(r.logs.String(), "restart ferryd to apply it")
	})
	if got := sortedNodeRoutes(t, m); !reflect.DeepEqual(got, want) {
		t.Errorf("node routes after this node's change = %v, want %v", got, want)
	}

	if err := nodes.Delete(ctx, "worker-0", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the log line about this node's deletion", func() bool {
		return strings.Contains(r.logs.String(), "this node is deleted in the node source")
	})
}

// TestKubernetesRestartKeepsRoutedNode restarts the agent while two nodes claim one pod
// range. The node whose route the pinned map holds keeps it, although the other's name sorts
// first.
func TestKubernetesRestartKeepsRoutedNode(t *testing.T) {
	node := agenttest.NewNode(t)
	client := nodesourcetest.NewClient(
		nodesourcetest.Node("worker-0", addr("10.0.1.20"), prefix("10.200.0.0/24")),
		nodesourcetest.Node("z-old", addr("10.0.1.21"), prefix("10.200.1.0/24")),
	)
	r := runWithKubernetes(t, node, client)
	r.waitReady(t)
	m := openMaps(t, node.BPFFSDir)
	want := []datapath.NodeRoute{nodeRoute("10.200.1.0/24", "10.0.1.21")}
	if _, err := client.CoreV1().Nodes().Create(context.Background(),
		nodesourcetest.Node("a-new", addr("10.0.2.50"), prefix("10.200.1.0/24")),
		metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a-new skipped", func() bool {
		return strings.Contains(r.logs.String(), "node=a-new")
	})
	r.stop(t)

	r = runWithKubernetes(t, node, client)
	r.waitReady(t)
	if got := sortedNodeRoutes(t, m); !reflect.DeepEqual(got, want) {
		t.Errorf("node routes after the restart = %v, want z-old's %v", got, want)
	}
}

func TestMetricsEndpoint(t *testing.T) {
	node := agenttest.NewNode(t)
	path := node.WriteConfig(t, node.Config(nil, ""))
	cfg := parseConfig(t, node.Config(nil, ""))
	r := runAgent(t, node, cfg, Options{ConfigPath: path, Version: "v9.9.9-test"})
	r.waitReady(t)

	status, body := httpGet(t, node, "/metrics")
	if status != 200 {
		t.Fatalf("/metrics = %d, want 200:\n%s", status, body)
	}
	checks := map[string]string{
		`ferry_hook_attached{hook="uplink_ingress",mode="tcx"}`: "1",
		`ferry_hook_attached{hook="uplink_egress",mode="tcx"}`:  "1",
		`ferry_hook_programs{hook="uplink_ingress",mode="tcx"}`: "1",
		`ferry_node_routes`:                            "2",
		`ferry_endpoints`:                              "0",
		`ferry_map_entries{map="node_routes"}`:         "2",
		`ferry_map_capacity_entries{map="nat_table"}`:  "524288",
		`ferry_nat_entries`:                            "0",
		`ferry_nodes{state="routed"}`:                  "3",
		`ferry_build_info{version="v9.9.9-test"}`:      "1",
		`ferry_config_reloads_total{result="success"}`: "0",
		`ferry_pod_hooks{state="missing"}`:             "0",
		`ferry_datapath_packets_total{dropped="true",hook="from-pod",reason="drop-spoofed-ip"}`: "0",
	}
	for series, want := range checks {
		if got := metricValue(t, body, series); got != "" && got != want {
			t.Errorf("%s = %s, want %s", series, got, want)
		}
	}

	// A valid reload and an invalid one are counted.
	r.reload <- nil
	waitFor(t, "the reload", func() bool {
		return strings.Contains(r.logs.String(), "reloaded config")
	})
	node.WriteConfig(t, "nodeName: [\n")
	r.reload <- nil
	waitFor(t, "the rejected reload", func() bool {
		return strings.Contains(r.logs.String(), "reload rejected")
	})
	_, body = httpGet(t, node, "/metrics")
	if got := metricValue(t, body, `ferry_config_reloads_total{result="success"}`); got != "1" {
		t.Errorf("successful reloads = %s, want 1", got)
	}
	if got := metricValue(t, body, `ferry_config_reloads_total{result="failure"}`); got != "1" {
		t.Errorf("failed reloads = %s, want 1", got)
	}

	// Without ferry's program on the uplink, the node is not ready.
	// Links on another interface than the uplink count as stale.
	node.Do(t, func() error {
		_, err := datapath.RemoveStaleLinks(node.BPFFSDir, 0)
		return err
	})
	status, body = httpGet(t, node, "/readyz")
	if status != 503 || !strings.Contains(body, "uplink_ingress") {
		t.Errorf("/readyz without the uplink program = %d %q, want 503 naming the hook",
			status, body)
	}
}

// TestKubernetesNodeIPMustMatch sets nodeIP to another address than this node's InternalIP
// in the API. The config's validation compares nodeIP only with a static node entry, so the
// start must refuse it.
func TestKubernetesNodeIPMustMatch(t *testing.T) {
	node := agenttest.NewNode(t)
	client := nodesourcetest.NewClient(
		nodesourcetest.Node("worker-0", addr("10.0.1.20"), prefix("10.200.0.0/24")),
	)
	cfg := parseConfig(t, kubernetesConfig(node)+"nodeIP: 10.0.1.99\n")
	log, _ := newLogger(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := node.DoErr(func() error {
		return Run(ctx, cfg, Options{NodeSource: nodesource.NewKubernetes(client), Logger: log})
	})
	if err == nil || !strings.Contains(err.Error(), "10.0.1.99 differs from the address "+
		"10.0.1.20 of node \"worker-0\"") {
		t.Errorf("Run returned %v, want the nodeIP mismatch", err)
	}
}
