package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
)

// Pod is a pod namespace that a CNI configuration list networked on a node.
type Pod struct {
	*Namespace
	// Name is the pod name, unique in the lab.
	Name string
	// Node is the node that runs the pod.
	Node *Node
	// ContainerID is the CNI container id, 64 hex digits as container runtimes use.
	ContainerID string
	// IP is the first IPv4 address in Result.
	IP netip.Addr
	// Result is the result of CNI ADD, converted to the current CNI result version.
	Result *current.Result

	conflist *libcni.NetworkConfigList
}

// AddPod creates the namespace <lab>-<name>, brings lo up in it and runs CNI ADD with the
// configuration list conflist, as a container runtime on n does: libcni starts the plugins
// from a thread inside the node namespace, so the node is the host side. When conflist is
// nil, AddPod uses the first configuration file in n.NetDir in lexical order, as a runtime
// does. On error it removes the namespace again.
func (n *Node) AddPod(ctx context.Context, name string, conflist []byte) (*Pod, error) {
	l := n.lab
	list, err := n.loadConflist(conflist)
	if err != nil {
		return nil, err
	}
	if err := l.reservePodName(name); err != nil {
		return nil, err
	}
	pod, err := n.addPod(ctx, name, list)
	if err != nil {
		l.mu.Lock()
		delete(l.pods, name)
		l.mu.Unlock()
		return nil, err
	}
	l.mu.Lock()
	l.pods[name] = pod
	l.mu.Unlock()
	l.logf("lab %s: pod %s on %s has %v", l.Name, name, n.Name, pod.IP)
	return pod, nil
}

// reservePodName checks that name is free for a pod namespace and reserves it with a nil entry
// until the pod is ready.
func (l *Lab) reservePodName(name string) error {
	if !namePattern.MatchString(name) || slices.Contains(reservedNames, name) {
		return fmt.Errorf("invalid pod name %q: use up to 32 lowercase letters, digits and "+
			"'-', other than %v", name, reservedNames)
	}
	if l.Node(name) != nil {
		return fmt.Errorf("invalid pod name %q: a node has that name; pick another", name)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.errIfClosed(); err != nil {
		return err
	}
	if _, ok := l.pods[name]; ok {
		return fmt.Errorf("add pod %s: the lab has a pod of that name; delete it first", name)
	}
	l.pods[name] = nil
	return nil
}

func (n *Node) addPod(ctx context.Context, name string, list *libcni.NetworkConfigList) (
	*Pod, error) {
	id, err := randomContainerID()
	if err != nil {
		return nil, err
	}
	nsh, err := n.lab.newNamespace(ctx, name)
	if err != nil {
		return nil, err
	}
	pod := &Pod{Namespace: nsh, Name: name, Node: n, ContainerID: id, conflist: list}

	var result *current.Result
	err = n.Do(func() error {
		raw, err := n.cni().AddNetworkList(ctx, list, pod.runtimeConf())
		if err != nil {
			return err
		}
		result, err = current.NewResultFromResult(raw)
		return err
	})
	if err != nil {
		err = fmt.Errorf("add pod %s on node %s with CNI network %q: %w", name, n.Name,
			list.Name, err)
		return nil, errors.Join(err, n.removePod(context.WithoutCancel(ctx), pod))
	}
	pod.Result = result
	for _, ipc := range result.IPs {
		if a, ok := netip.AddrFromSlice(ipc.Address.IP); ok && a.Unmap().Is4() {
			pod.IP = a.Unmap()
			break
		}
	}
	return pod, nil
}

// DelPod runs CNI DEL for the pod and deletes its namespace, also when CNI DEL fails.
func (n *Node) DelPod(ctx context.Context, pod *Pod) error {
	err := n.removePod(ctx, pod)
	l := n.lab
	l.mu.Lock()
	if l.pods[pod.Name] == pod {
		delete(l.pods, pod.Name)
	}
	l.mu.Unlock()
	return err
}

// removePod runs CNI DEL and deletes the pod namespace, after closing the peer reporters in it.
func (n *Node) removePod(ctx context.Context, pod *Pod) error {
	var errs []error
	err := n.Do(func() error {
		return n.cni().DelNetworkList(ctx, pod.conflist, pod.runtimeConf())
	})
	if err != nil {
		errs = append(errs, fmt.Errorf("delete pod %s on node %s with CNI network %q: %w",
			pod.Name, n.Name, pod.conflist.Name, err))
	}
	l := n.lab
	l.mu.Lock()
	var keep []*PeerReporter
	for _, r := range l.reporters {
		if r.ns == pod.Namespace {
			r.Close()
		} else {
			keep = append(keep, r)
		}
	}
	l.reporters = keep
	l.mu.Unlock()
	if err := deleteNamespace(pod.NSName); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// CheckPod runs CNI CHECK for the pod.
func (n *Node) CheckPod(ctx context.Context, pod *Pod) error {
	err := n.Do(func() error {
		return n.cni().CheckNetworkList(ctx, pod.conflist, pod.runtimeConf())
	})
	if err != nil {
		return fmt.Errorf("check pod %s on node %s with CNI network %q: %w", pod.Name, n.Name,
			pod.conflist.Name, err)
	}
	return nil
}

func (n *Node) cni() *libcni.CNIConfig {
	return libcni.NewCNIConfigWithCacheDir(n.lab.binDirs, n.CacheDir, nil)
}

// runtimeConf returns what a Kubernetes container runtime passes for the pod: the Kubernetes
// CNI_ARGS, with IgnoreUnknown=1 so that plugins without them accept the call.
func (p *Pod) runtimeConf() *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID: p.ContainerID,
		NetNS:       p.NSPath,
		IfName:      "eth0",
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", "default"},
			{"K8S_POD_NAME", p.Name},
			{"K8S_POD_INFRA_CONTAINER_ID", p.ContainerID},
		},
	}
}

// loadConflist parses conflist, or the first configuration file in n.NetDir if it is nil.
func (n *Node) loadConflist(conflist []byte) (*libcni.NetworkConfigList, error) {
	if conflist != nil {
		list, err := libcni.ConfListFromBytes(conflist)
		if err != nil {
			return nil, fmt.Errorf("parse CNI configuration list for node %s: %w", n.Name, err)
		}
		return list, nil
	}

	files, err := libcni.ConfFiles(n.NetDir, []string{".conf", ".conflist", ".json"})
	if err != nil {
		return nil, fmt.Errorf("list CNI configuration files in %s: %w", n.NetDir, err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("load CNI configuration of node %s: %s has no .conf, "+
			".conflist or .json file; set up the node's dataplane first", n.Name, n.NetDir)
	}

	slices.Sort(files)
	file := files[0]
	if strings.HasSuffix(file, ".conflist") {
		list, err := libcni.ConfListFromFile(file)
		if err != nil {
			return nil, fmt.Errorf("load CNI configuration list %s: %w", file, err)
		}
		return list, nil
	}

	conf, err := libcni.ConfFromFile(file)
	if err != nil {
		return nil, fmt.Errorf("load CNI configuration %s: %w", file, err)
	}
	list, err := libcni.ConfListFromConf(conf)
	if err != nil {
		return nil, fmt.Errorf("convert CNI configuration %s to a list: %w",
			filepath.Base(file), err)
	}
	return list, nil
}

func randomContainerID() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("read random container id: %w", err)
	}
	return hex.EncodeToString(b), nil
}
