package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/ferrynet/ferry/pkg/nodesource/nodesourcetest"
	"github.com/ferrynet/ferry/test/lab"
)

// Configurations of the ferryd memory case.
const (
	cfgNodesLab   = "3 nodes"
	cfgNodesSome  = "1,003 nodes"
	cfgNodesExtra = "5,003 nodes"
	cfgNodesK8s   = "5,003 nodes from Kubernetes"
)

// ferrydNodeLists are the configurations of the ferryd memory case. The static node list
// gets no extra nodes, 1,000, or the 5,000 of the node routes case, which shows how memory
// and start time grow with the list. The last one has the same 5,003 nodes as Node objects
// that ferryd reads from an API server.
var ferrydNodeLists = []struct {
	cfg        string
	extra      int
	kubernetes bool
}{{cfgNodesLab, 0, false}, {cfgNodesSome, 1000, false}, {cfgNodesExtra, extraNodes, false},
	{cfgNodesK8s, extraNodes, true}}

// apiServerAddr is where worker-2's namespace serves the Node objects of the Kubernetes
// configuration, on its own loopback.
const apiServerAddr = "127.0.0.1:6443"

// startAPIServer serves the lab's nodes and the extra nodes as Node objects in n's namespace,
// each with the labels, conditions and image list of a real node, and writes a kubeconfig for
// it. It returns the kubeconfig's path.
func startAPIServer(n *lab.Node, nodes []*lab.Node) (*nodesourcetest.APIServer, string, error) {
	api := nodesourcetest.NewAPIServer()
	for _, other := range nodes {
		api.Put(nodesourcetest.Node(other.Name, other.IP, other.PodCIDR))
	}
	for i := range extraNodes {
		api.Put(nodesourcetest.Node(fmt.Sprintf("extra-%04d", i), extraNodeIP(i),
			extraPodCIDR(i)))
	}
	listener, err := n.Listen(apiServerAddr)
	if err != nil {
		return nil, "", err
	}
	api.Serve(listener)
	path := filepath.Join(n.StateDir, "kubeconfig")
	if err := nodesourcetest.WriteKubeconfig(path, apiServerAddr); err != nil {
		api.Close()
		return nil, "", err
	}
	return api, path, nil
}

// Kinds of the ferryd memory case.
const (
	kindFerrydRSS   = "ferryd resident memory (VmRSS) after 3 s idle, MiB"
	kindFerrydReady = "ferryd start until its CNI config is written, ms"
	kindFerrydPeak  = "ferryd peak resident memory (VmHWM) after the rounds, MiB"
)

// ferrydRestarts is how many times ferryd starts with each node list.
const ferrydRestarts = 3

// ferrydIdle is how long ferryd runs before its memory is read: past the start, before its
// first NAT expiry pass at 10 s.
const ferrydIdle = 3 * time.Second

// runFerrydMemory restarts ferryd on worker-2 of the ferry lab with each node list of
// ferrydNodeLists in turn. It stores the time until ferryd is ready and its resident memory
// once idle. worker-2 runs no pod of the bench.
func (b *bench) runFerrydMemory(ctx context.Context) error {
	n := b.ferry.lab.Node("worker-2")
	// The lab's configuration is back at the end, also after a failed start.
	defer func() {
		if err := writeFerrydConfig(n, b.ferryOp, nil); err != nil {
			log.Printf("bench: restore ferryd config of %s: %v", n.Name, err)
			return
		}
		if _, err := n.RestartFerryd(ctx, b.binDir); err != nil {
			log.Printf("bench: restart ferryd on %s with the lab's config: %v", n.Name, err)
		}
	}()

	api, kubeconfig, err := startAPIServer(n, b.ferry.lab.Nodes)
	if err != nil {
		return err
	}
	defer api.Close()

	for i := range ferrydRestarts * len(ferrydNodeLists) {
		list := ferrydNodeLists[i%len(ferrydNodeLists)]
		cfg := list.cfg
		if list.kubernetes {
			opts := b.ferryOp
			opts.Kubeconfig = kubeconfig
			err = writeFerrydConfig(n, opts, nil)
		} else {
			err = writeFerrydConfig(n, b.ferryOp, extraNodeLines(list.extra))
		}
		if err != nil {
			return err
		}
		n.StopFerryd()
		// RestartFerryd returns once the CNI configuration exists, so the old one goes
		// first. It polls every 50 ms, which bounds the resolution of the start time.
		err = os.Remove(n.FerryConflistPath())
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove CNI config of %s: %w", n.Name, err)
		}
		start := time.Now()
		p, err := n.RestartFerryd(ctx, b.binDir)
		if err != nil {
			b.fail(kindFerrydReady, "", cfg, err)
			continue
		}
		b.res.add(kindFerrydReady, "", cfg, ms(time.Since(start)))

		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(ferrydIdle):
		}
		rss, _, err := processRSS(p.PID)
		if err != nil {
			return err
		}
		b.res.add(kindFerrydRSS, "", cfg, float64(rss)/(1<<20))
	}
	return nil
}

// recordFerrydPeak stores the peak resident memory of worker-0's ferryd, which ran the
// NAT expiry passes over the extra NAT entries during the rounds.
func (b *bench) recordFerrydPeak() error {
	p := b.ferry.lab.Node("worker-0").Ferryd()
	if p == nil {
		return fmt.Errorf("read ferryd memory on worker-0: ferryd is not running")
	}
	_, peak, err := processRSS(p.PID)
	if err != nil {
		return err
	}
	b.res.add(kindFerrydPeak, "", cfgFerry, float64(peak)/(1<<20))
	return nil
}
