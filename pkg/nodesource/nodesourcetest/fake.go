// Package nodesourcetest builds Node objects and fake API clients for tests
// and benchmarks of the Kubernetes node source.
package nodesourcetest

import (
	"fmt"
	"net/netip"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// ClusterCIDR contains the pod ranges of up to 8192 nodes from Nodes.
var ClusterCIDR = netip.MustParsePrefix("10.0.0.0/11")

// Node returns a Node object with an InternalIP, a pod range (when podCIDR
// is valid) and, like a real node, a hostname address, labels, conditions
// and a list of cached images, which the node source discards.
func Node(name string, ip netip.Addr, podCIDR netip.Prefix) *corev1.Node {
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: name,
			Labels: map[string]string{
				"kubernetes.io/hostname": name,
				"kubernetes.io/os":       "linux",
				"kubernetes.io/arch":     "amd64",
			},
		},
		Status: corev1.NodeStatus{
			Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeHostName, Address: name},
			},
		},
	}
	if ip.IsValid() {
		n.Status.Addresses = append(n.Status.Addresses,
			corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: ip.String()})
	}
	if podCIDR.IsValid() {
		n.Spec.PodCIDR = podCIDR.String()
		n.Spec.PodCIDRs = []string{podCIDR.String()}
	}
	for _, c := range []corev1.NodeConditionType{corev1.NodeReady, corev1.NodeMemoryPressure,
		corev1.NodeDiskPressure, corev1.NodePIDPressure} {
		n.Status.Conditions = append(n.Status.Conditions, corev1.NodeCondition{
			Type: c, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientResources",
			Message: "kubelet reports the condition " + string(c),
		})
	}
	for i := range 20 {
		n.Status.Images = append(n.Status.Images, corev1.ContainerImage{
			Names:     []string{fmt.Sprintf("registry.example/team/image-%02d:v1.2.3", i)},
			SizeBytes: 50 << 20,
		})
	}
	return n
}

// NodeName returns the name of node i of Nodes.
func NodeName(i int) string { return fmt.Sprintf("node-%05d", i) }

// NodeIP returns the InternalIP of node i of Nodes: 172.16.0.1 plus i.
func NodeIP(i int) netip.Addr {
	b := netip.MustParseAddr("172.16.0.1").As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(i)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// PodCIDR returns the pod range of node i of Nodes: the i-th /24 of ClusterCIDR.
func PodCIDR(i int) netip.Prefix {
	b := ClusterCIDR.Addr().As4()
	b[1] += byte(i >> 8)
	b[2] = byte(i)
	return netip.PrefixFrom(netip.AddrFrom4(b), 24)
}

// Nodes returns count Node objects, node i with NodeName(i), NodeIP(i) and
// PodCIDR(i). count must be at most 8192.
func Nodes(count int) []runtime.Object {
	if count > 8192 {
		panic(fmt.Sprintf("nodesourcetest: %d nodes do not fit in %s", count, ClusterCIDR))
	}
	out := make([]runtime.Object, count)
	for i := range count {
		out[i] = Node(NodeName(i), NodeIP(i), PodCIDR(i))
	}
	return out
}

// Client is a fake clientset with a signal for the first watch of nodes.
type Client struct {
	*fake.Clientset
	// Watching is closed once an informer watches the nodes. The fake
	// clientset does not replay changes made between an informer's list and
	// its watch, so a test waits for Watching before it changes nodes.
	Watching <-chan struct{}
}

// NewClient returns a fake clientset that holds objects.
func NewClient(objects ...runtime.Object) *Client {
	cs := fake.NewClientset(objects...)
	watching := make(chan struct{})
	var once sync.Once
	cs.PrependWatchReactor("nodes", func(action k8stesting.Action) (bool, watch.Interface, error) {
		var opts metav1.ListOptions
		if w, ok := action.(k8stesting.WatchActionImpl); ok {
			opts = w.ListOptions
		}
		w, err := cs.Tracker().Watch(action.GetResource(), action.GetNamespace(), opts)
		if err != nil {
			return false, nil, err
		}
		once.Do(func() { close(watching) })
		return true, w, nil
	})
	return &Client{Clientset: cs, Watching: watching}
}

// Cluster returns count nodes of Nodes and one more, named self with the
// address selfIP and the pod range PodCIDR(count), as the node that runs
// ferryd. count must be below 8192.
func Cluster(self string, selfIP netip.Addr, count int) []runtime.Object {
	return append(Nodes(count), Node(self, selfIP, PodCIDR(count)))
}
