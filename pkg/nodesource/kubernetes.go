package nodesource

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

// Kubernetes watches the Node objects of a cluster with an informer. A
// node's route comes from its first IPv4 range in spec.podCIDRs (or
// spec.podCIDR) and its first IPv4 InternalIP address.
type Kubernetes struct {
	client  kubernetes.Interface
	onError func(error)

	mu      sync.Mutex
	nodes   map[string]Node
	changed notifier
}

// NewKubernetes returns a source that watches the nodes through client.
func NewKubernetes(client kubernetes.Interface) *Kubernetes {
	return &Kubernetes{client: client, nodes: map[string]Node{}, changed: newNotifier()}
}

// NewClient returns a client of the API server that the kubeconfig file at
// path names, or, when path is empty, of the cluster that ferryd runs in as
// a pod, with its service account's credentials.
func NewClient(path string) (kubernetes.Interface, error) {
	var (
		cfg *rest.Config
		err error
	)
	if path == "" {
		cfg, err = rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("load in-cluster credentials: %w: run ferryd in a pod, "+
				"or set kubernetes.kubeconfig", err)
		}
	} else {
		cfg, err = clientcmd.BuildConfigFromFlags("", path)
		if err != nil {
			return nil, fmt.Errorf("load kubeconfig %s: %w", path, err)
		}
	}
	cfg.UserAgent = "ferryd"
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("create Kubernetes client for %s: %w", cfg.Host, err)
	}
	return client, nil
}

// SetErrorHandler sets fn to receive the errors of listing the nodes until
// the first list is complete, such as an unreachable API server, and the
// errors that end the informer's list and watch later. The informer
// retries a refused or broken watch on its own without reporting it. Call
// it before Start.
func (k *Kubernetes) SetErrorHandler(fn func(error)) { k.onError = fn }

// Name returns "kubernetes".
func (k *Kubernetes) Name() string { return "kubernetes" }

// Changed returns the channel that node changes are signalled on.
func (k *Kubernetes) Changed() <-chan struct{} { return k.changed }

// Nodes returns the nodes seen so far, sorted by name, including those that
// have no address or pod range yet.
func (k *Kubernetes) Nodes() []Node {
	k.mu.Lock()
	out := make([]Node, 0, len(k.nodes))
	for _, n := range k.nodes {
		out = append(out, n)
	}
	k.mu.Unlock()
	sortByName(out)
	return out
}

// Start starts the informer and waits until it has listed every node.
func (k *Kubernetes) Start(ctx context.Context) error {
	// No periodic resync: ferryd reacts only to changes of the objects.
	factory := informers.NewSharedInformerFactory(k.client, 0)
	informer := factory.Core().V1().Nodes().Informer()
	// The informer's cache keeps only what ferry reads: the status of a
	// real node, with its image list, is many times larger.
	if err := informer.SetTransform(trimNode); err != nil {
		return fmt.Errorf("set node transform: %w", err)
	}
	if k.onError != nil {
		err := informer.SetWatchErrorHandler(func(_ *cache.Reflector, err error) {
			k.onError(err)
		})
		if err != nil {
			return fmt.Errorf("set node watch error handler: %w", err)
		}
	}
	reg, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    k.put,
		UpdateFunc: func(_, obj any) { k.put(obj) },
		DeleteFunc: k.delete,
	})
	if err != nil {
		return fmt.Errorf("add node event handler: %w", err)
	}
	factory.Start(ctx.Done())
	synced := make(chan struct{})
	defer close(synced)
	if k.onError != nil {
		go k.probeUntil(ctx, synced)
	}
	if !cache.WaitForCacheSync(ctx.Done(), reg.HasSynced) {
		return fmt.Errorf("list nodes: %w", context.Cause(ctx))
	}
	return nil
}

// Probing while the first list is pending: the informer retries a refused
// or timed-out watch on its own and reports nothing, so a one-node list
// request every probeInterval finds out why the nodes do not come.
const (
	probeInterval = 5 * time.Second
	probeTimeout  = 5 * time.Second
)

// probeUntil lists one node every probeInterval until done closes, and
// passes each failure to the error handler.
func (k *Kubernetes) probeUntil(ctx context.Context, done <-chan struct{}) {
	ticker := time.NewTicker(probeInterval)
	defer ticker.Stop()
	for {
		select {
		case <-done:
			return
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		probeCtx, cancel := context.WithTimeout(ctx, probeTimeout)
		_, err := k.client.CoreV1().Nodes().List(probeCtx, metav1.ListOptions{Limit: 1})
		cancel()
		if err != nil && ctx.Err() == nil {
			k.onError(fmt.Errorf("nodes not listed yet, a list request with a %s timeout "+
				"failed: %w", probeTimeout, err))
		}
	}
}

func (k *Kubernetes) put(obj any) {
	node, ok := obj.(*corev1.Node)
	if !ok {
		return
	}
	n := FromNode(node)
	k.mu.Lock()
	old, found := k.nodes[n.Name]
	k.nodes[n.Name] = n
	k.mu.Unlock()
	if !found || old != n {
		k.changed.notify()
	}
}

func (k *Kubernetes) delete(obj any) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	node, ok := obj.(*corev1.Node)
	if !ok {
		return
	}
	k.mu.Lock()
	_, found := k.nodes[node.Name]
	delete(k.nodes, node.Name)
	k.mu.Unlock()
	if found {
		k.changed.notify()
	}
}

// FromNode returns ferry's view of a Node object.
func FromNode(node *corev1.Node) Node {
	n := Node{Name: node.Name}
	cidrs := node.Spec.PodCIDRs
	if len(cidrs) == 0 && node.Spec.PodCIDR != "" {
		cidrs = []string{node.Spec.PodCIDR}
	}
	for _, s := range cidrs {
		p, err := netip.ParsePrefix(s)
		if err == nil && p.Addr().Is4() {
			n.PodCIDR = p.Masked()
			break
		}
	}
	for _, a := range node.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		ip, err := netip.ParseAddr(a.Address)
		if err == nil && ip.Is4() {
			n.IP = ip
			break
		}
	}
	return n
}

// trimNode reduces a Node object to its name, pod ranges and InternalIP
// addresses before the informer stores it.
func trimNode(obj any) (any, error) {
	node, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	out := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:            node.Name,
			UID:             node.UID,
			ResourceVersion: node.ResourceVersion,
		},
		Spec: corev1.NodeSpec{PodCIDR: node.Spec.PodCIDR, PodCIDRs: node.Spec.PodCIDRs},
	}
	for _, a := range node.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			out.Status.Addresses = append(out.Status.Addresses, a)
		}
	}
	return out, nil
}
