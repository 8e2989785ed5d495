package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
)

// AddPodTimed is AddPod that also returns the duration of the CNI ADD call alone: the
// time from libcni starting the first plugin of conflist to the last one returning,
// without creating the pod namespace. conflist must not be nil.
func (n *Node) AddPodTimed(ctx context.Context, name string, conflist []byte) (*Pod,
	time.Duration, error) {
	if conflist == nil {
		return nil, 0, fmt.Errorf("add pod %s with timing: missing conflist; pass the "+
			"CNI configuration list to time", name)
	}
	l := n.lab
	list, err := n.loadConflist(conflist)
	if err != nil {
		return nil, 0, err
	}
	if err := l.reservePodName(name); err != nil {
		return nil, 0, err
	}
	release := func() {
		l.mu.Lock()
		delete(l.pods, name)
		l.mu.Unlock()
	}
	id, err := randomContainerID()
	if err != nil {
		release()
		return nil, 0, err
	}
	nsh, err := l.newNamespace(ctx, name)
	if err != nil {
		release()
		return nil, 0, err
	}
	pod := &Pod{Namespace: nsh, Name: name, Node: n, ContainerID: id, conflist: list}

	var (
		result  *current.Result
		elapsed time.Duration
	)
	err = n.Do(func() error {
		start := time.Now()
		raw, err := n.cni().AddNetworkList(ctx, list, pod.runtimeConf())
		elapsed = time.Since(start)
		if err != nil {
			return err
		}
		result, err = current.NewResultFromResult(raw)
		return err
	})
	if err != nil {
		err = fmt.Errorf("add pod %s on node %s with CNI network %q: %w", name, n.Name,
			list.Name, err)
		release()
		return nil, 0, errors.Join(err, n.removePod(context.WithoutCancel(ctx), pod))
	}
	pod.Result = result
	for _, ipc := range result.IPs {
		if a, ok := netip.AddrFromSlice(ipc.Address.IP); ok && a.Unmap().Is4() {
			pod.IP = a.Unmap()
			break
		}
	}
	l.mu.Lock()
	l.pods[name] = pod
	l.mu.Unlock()
	return pod, elapsed, nil
}

// DelPodTimed is DelPod that also returns the duration of the CNI DEL call alone, without
// deleting the pod namespace. Like DelPod, it deletes the namespace also when CNI DEL fails.
func (n *Node) DelPodTimed(ctx context.Context, pod *Pod) (time.Duration, error) {
	var elapsed time.Duration
	delErr := n.Do(func() error {
		start := time.Now()
		err := n.cni().DelNetworkList(ctx, pod.conflist, pod.runtimeConf())
		elapsed = time.Since(start)
		return err
	})
	if delErr != nil {
		delErr = fmt.Errorf("delete pod %s on node %s with CNI network %q: %w", pod.Name,
			n.Name, pod.conflist.Name, delErr)
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
	if l.pods[pod.Name] == pod {
		delete(l.pods, pod.Name)
	}
	l.mu.Unlock()
	return elapsed, errors.Join(delErr, deleteNamespace(pod.NSName))
}
