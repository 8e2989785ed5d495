package agenttest

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// HookPrograms counts the BPF programs on the TC hooks of one interface.
type HookPrograms struct {
	TCXIngress, TCXEgress       int // programs attached with tcx
	ClsactIngress, ClsactEgress int // cls_bpf filters on the clsact qdisc
}

// Ingress returns the number of programs on the ingress hook.
func (h HookPrograms) Ingress() int { return h.TCXIngress + h.ClsactIngress }

// Egress returns the number of programs on the egress hook.
func (h HookPrograms) Egress() int { return h.TCXEgress + h.ClsactEgress }

// CountHookPrograms counts the programs on the TC hooks of ifindex in the
// calling thread's network namespace.
func CountHookPrograms(ifindex int) (HookPrograms, error) {
	var h HookPrograms
	var err error
	if h.TCXIngress, err = countTCX(ifindex, ebpf.AttachTCXIngress); err != nil {
		return h, err
	}
	if h.TCXEgress, err = countTCX(ifindex, ebpf.AttachTCXEgress); err != nil {
		return h, err
	}
	if h.ClsactIngress, err = countClsBPF(ifindex, netlink.HANDLE_MIN_INGRESS); err != nil {
		return h, err
	}
	if h.ClsactEgress, err = countClsBPF(ifindex, netlink.HANDLE_MIN_EGRESS); err != nil {
		return h, err
	}
	return h, nil
}

func countTCX(ifindex int, attach ebpf.AttachType) (int, error) {
	res, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: attach})
	if err != nil {
		return 0, fmt.Errorf("query %s programs of ifindex %d: %w", attach, ifindex, err)
	}
	return len(res.Programs), nil
}

func countClsBPF(ifindex int, parent uint32) (int, error) {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return 0, fmt.Errorf("find ifindex %d: %w", ifindex, err)
	}
	filters, err := netlink.FilterList(l, parent)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
		return 0, nil // no clsact qdisc
	}
	if err != nil {
		return 0, fmt.Errorf("list filters of ifindex %d: %w", ifindex, err)
	}
	n := 0
	for _, f := range filters {
		if _, ok := f.(*netlink.BpfFilter); ok {
			n++
		}
	}
	return n, nil
}
