package lab

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// ferryConflistFile is the name of the CNI configuration that ferryd writes into net.d.
const ferryConflistFile = "10-ferry.conflist"

// ferrydReadyTimeout bounds the wait for ferryd to write its CNI configuration.
const ferrydReadyTimeout = 30 * time.Second

// FerryOptions configures the ferry dataplane of a lab.
type FerryOptions struct {
	// BinDir contains the ferry, ferryd and ferryctl binaries.
	BinDir string
	// ClusterCIDR is the pod range of the whole cluster; zero means DefaultClusterCIDR.
	ClusterCIDR netip.Prefix
	// AttachMode is ferryd's attachMode: "auto" (the default), "tcx" or "clsact".
	AttachMode string
	// PodAttachMode is ferryd's podAttachMode: "clsact" (the default) or "tcx".
	PodAttachMode string
	// CloudRoutes names the nodes whose pod ranges the vpc router routes. Nodes on one
	// subnet reach each other's pods without such routes; traffic between subnets needs them.
	CloudRoutes []string
	// Nodes, when set, limits the static node list in ferryd's configuration to these
	// node names; by default it lists every node of the lab.
	Nodes []string
	// Kubeconfig, when set, replaces the static node list with the Kubernetes node
	// source: ferryd reads the nodes from the API server that this kubeconfig names.
	Kubeconfig string
	// InCluster replaces the static node list with the Kubernetes node source and the
	// in-cluster credentials of a pod: the KUBERNETES_SERVICE_HOST and _PORT variables
	// and the files under /var/run/secrets/kubernetes.io/serviceaccount.
	InCluster bool
}

// Ferry returns the dataplane that ferry provides: ferryd on every node with a static node
// list, the ferry CNI plugin, and the same kube-proxy style Service DNAT as the baseline.
func Ferry(opts FerryOptions) Dataplane {
	return Dataplane{
		Name: "ferry",
		Setup: func(ctx context.Context, l *Lab) error {
			return l.SetupFerry(ctx, opts)
		},
		Conflist:   func(n *Node) ([]byte, error) { return n.FerryConflist() },
		CNIBinDirs: []string{opts.BinDir},
		Describe: func(ctx context.Context, l *Lab, w io.Writer) {
			for _, cmd := range []string{"routes", "endpoints"} {
				n := l.Nodes[0]
				fmt.Fprintf(w, "$ ferryctl %s   (on %s)\n", cmd, n.Name)
				out, err := n.Ferryctl(ctx, opts.BinDir, cmd)
				if err != nil {
					fmt.Fprintf(w, "ferryctl %s failed: %v\n", cmd, err)
				}
				fmt.Fprintf(w, "%s\n", out)
			}
		},
	}
}

// Ferryctl runs ferryctl with the node's bpffs directory inside the node namespace.
func (n *Node) Ferryctl(ctx context.Context, binDir string, args ...string) (string, error) {
	cmd := append([]string{filepath.Join(binDir, "ferryctl"), "--bpffs-dir", n.BPFFSDir()},
		args...)
	return n.Run(ctx, cmd...)
}

// SetupFerry starts ferryd on every node, waits until each has written its CNI
// configuration, adds the Service DNAT and the cloud routes that opts names.
func (l *Lab) SetupFerry(ctx context.Context, opts FerryOptions) error {
	for _, n := range l.Nodes {
		if _, err := n.StartFerryd(ctx, opts); err != nil {
			return err
		}
		if err := n.AddServiceDNAT(ctx, ServiceVIP, ServiceBackend); err != nil {
			return err
		}
	}
	for _, name := range opts.CloudRoutes {
		n := l.Node(name)
		if n == nil {
			return fmt.Errorf("add cloud route: node %q not in lab %s", name, l.Name)
		}
		if err := l.AddCloudRoute(n); err != nil {
			return err
		}
	}
	return nil
}

// FerrydConfigPath returns where StartFerryd writes the node's ferryd configuration.
func (n *Node) FerrydConfigPath() string { return filepath.Join(n.StateDir, "ferryd.yaml") }

// FerrydConfig returns the YAML configuration of ferryd on this node.
func (n *Node) FerrydConfig(opts FerryOptions) []byte {
	cluster := opts.ClusterCIDR
	if !cluster.IsValid() {
		cluster = DefaultClusterCIDR
	}
	mode := opts.AttachMode
	if mode == "" {
		mode = "auto"
	}

	var b strings.Builder
	fmt.Fprintf(&b, "nodeName: %s\n", n.Name)
	fmt.Fprintf(&b, "clusterCIDR: %s\n", cluster)
	fmt.Fprintf(&b, "device: eth0\n")
	fmt.Fprintf(&b, "nodeIP: %s\n", n.IP)
	fmt.Fprintf(&b, "attachMode: %s\n", mode)
	if opts.PodAttachMode != "" {
		fmt.Fprintf(&b, "podAttachMode: %s\n", opts.PodAttachMode)
	}
	switch {
	case opts.Kubeconfig != "":
		fmt.Fprintf(&b, "kubernetes:\n  kubeconfig: %s\n", opts.Kubeconfig)
	case opts.InCluster:
		fmt.Fprintf(&b, "kubernetes: {}\n")
	default:
		fmt.Fprintf(&b, "nodes:\n")
		for _, other := range n.lab.Nodes {
			if len(opts.Nodes) > 0 && !slices.Contains(opts.Nodes, other.Name) && other != n {
				continue
			}
			fmt.Fprintf(&b, "  - {name: %s, ip: %s, podCIDR: %s}\n", other.Name, other.IP,
				other.PodCIDR)
		}
	}
	fmt.Fprintf(&b, "masquerade:\n  enabled: true\n  natTableSize: 65536\n")
	fmt.Fprintf(&b, "bpffsDir: %s\n", n.BPFFSDir())
	fmt.Fprintf(&b, "cni:\n")
	fmt.Fprintf(&b, "  confDir: %s\n", n.NetDir)
	fmt.Fprintf(&b, "  binDir: %s\n", opts.BinDir)
	fmt.Fprintf(&b, "  confName: %s\n", ferryConflistFile)
	fmt.Fprintf(&b, "  ipamDataDir: %s\n", n.IPAMDir)
	return []byte(b.String())
}

// WriteFerrydConfig writes the node's ferryd configuration for opts.
func (n *Node) WriteFerrydConfig(opts FerryOptions) error {
	path := n.FerrydConfigPath()
	if err := os.WriteFile(path, n.FerrydConfig(opts), 0o644); err != nil {
		return fmt.Errorf("write ferryd config %s: %w", path, err)
	}
	return nil
}

// StartFerryd writes the node's ferryd configuration, starts ferryd in the node namespace
// and waits until it has written the CNI configuration, which it does once the dataplane
// is attached and filled.
func (n *Node) StartFerryd(ctx context.Context, opts FerryOptions) (*Process, error) {
	if err := n.WriteFerrydConfig(opts); err != nil {
		return nil, err
	}
	return n.RestartFerryd(ctx, opts.BinDir)
}

// RestartFerryd starts ferryd with the configuration file already written, after stopping
// a running one, and waits for the CNI configuration.
func (n *Node) RestartFerryd(ctx context.Context, binDir string) (*Process, error) {
	n.StopFerryd()
	p, err := n.Start(ctx, filepath.Join(binDir, "ferryd"), "--config", n.FerrydConfigPath())
	if err != nil {
		return nil, err
	}
	n.ferryd = p

	deadline := time.Now().Add(ferrydReadyTimeout)
	for {
		if _, err := os.Stat(n.FerryConflistPath()); err == nil {
			return p, nil
		}
		select {
		case <-p.Done():
			return nil, fmt.Errorf("ferryd on %s exited before it was ready: %s", n.Name,
				strings.TrimSpace(p.Output()))
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("ferryd on %s wrote no CNI configuration within %s: %s",
				n.Name, ferrydReadyTimeout, strings.TrimSpace(p.Output()))
		}
	}
}

// Ferryd returns the ferryd process that StartFerryd started, or nil.
func (n *Node) Ferryd() *Process { return n.ferryd }

// StopFerryd stops the node's ferryd, if one runs, with SIGTERM.
func (n *Node) StopFerryd() {
	if n.ferryd != nil {
		n.ferryd.Stop()
		n.ferryd = nil
	}
}

// FerryConflistPath returns where ferryd writes the node's CNI configuration.
func (n *Node) FerryConflistPath() string { return filepath.Join(n.NetDir, ferryConflistFile) }

// FerryConflist returns the CNI configuration that ferryd wrote on this node.
func (n *Node) FerryConflist() ([]byte, error) {
	data, err := os.ReadFile(n.FerryConflistPath())
	if err != nil {
		return nil, fmt.Errorf("read ferry CNI config of %s: %w", n.Name, err)
	}
	return data, nil
}
