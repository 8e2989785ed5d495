package nodesource

import (
	"context"
	"slices"
	"sync"
)

// Static is the node list of ferryd's configuration file. Set replaces it,
// as a reload of the file does.
type Static struct {
	mu      sync.Mutex
	nodes   []Node
	changed notifier
}

// NewStatic returns a source that serves nodes.
func NewStatic(nodes []Node) *Static {
	s := &Static{changed: newNotifier()}
	s.nodes = slices.Clone(nodes)
	sortByName(s.nodes)
	return s
}

// Start returns nil at once: the list is complete from the start.
func (s *Static) Start(context.Context) error { return nil }

// Nodes returns the list sorted by name.
func (s *Static) Nodes() []Node {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.nodes)
}

// Changed returns the channel that Set signals on.
func (s *Static) Changed() <-chan struct{} { return s.changed }

// Name returns "static".
func (s *Static) Name() string { return "static" }

// Set replaces the node list and signals Changed when it differs.
func (s *Static) Set(nodes []Node) {
	next := slices.Clone(nodes)
	sortByName(next)
	s.mu.Lock()
	same := slices.Equal(s.nodes, next)
	s.nodes = next
	s.mu.Unlock()
	if !same {
		s.changed.notify()
	}
}
