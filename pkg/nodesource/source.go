// Package nodesource provides ferryd with the nodes of the cluster: their
// names, addresses and pod ranges. Static serves the list of the
// configuration file; Kubernetes watches the Node objects of an API server.
// Both implement Source, so that ferryd applies either with the same code.
package nodesource

import (
	"cmp"
	"context"
	"net/netip"
	"slices"
)

// Node is a cluster node as ferry routes to it.
type Node struct {
	Name string
	// IP is the node's IPv4 address; the zero Addr while it has none.
	IP netip.Addr
	// PodCIDR is the node's IPv4 pod range; the zero Prefix until one is
	// assigned.
	PodCIDR netip.Prefix
}

// Complete reports whether the node has an address and a pod range, which
// ferry needs to route to its pods.
func (n Node) Complete() bool { return n.IP.IsValid() && n.PodCIDR.IsValid() }

// Source delivers the nodes of the cluster.
type Source interface {
	// Start begins watching and returns once Nodes holds the complete node
	// list, or with an error when ctx ends first or the source cannot start.
	// The source stops watching when ctx ends.
	Start(ctx context.Context) error
	// Nodes returns the current nodes sorted by name. The caller may keep
	// and modify the slice.
	Nodes() []Node
	// Changed returns a channel that receives a value after Nodes changed.
	// Changes that come in quick succession may arrive as one value.
	Changed() <-chan struct{}
	// Name names the source in logs and metrics: "static" or "kubernetes".
	Name() string
}

// notifier signals a change on a channel with room for one value, so that
// a signal never blocks and changes coalesce until the receiver reads.
type notifier chan struct{}

func newNotifier() notifier { return make(notifier, 1) }

func (n notifier) notify() {
	select {
	case n <- struct{}{}:
	default:
	}
}

func sortByName(nodes []Node) {
	slices.SortFunc(nodes, func(a, b Node) int { return cmp.Compare(a.Name, b.Name) })
}
