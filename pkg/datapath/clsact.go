package datapath

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ferry's cls_bpf filters carry this priority and handle, which identify
// them among other software's filters on the same clsact qdisc.
const (
	clsactPriority = 0x4ff
	clsactHandle   = 0xfe77
)

func clsactParent(d direction) uint32 {
	if d == ingress {
		return netlink.HANDLE_MIN_INGRESS
	}
	return netlink.HANDLE_MIN_EGRESS
}

func ensureClsact(ifindex int) error {
	qdisc := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{
			LinkIndex: ifindex,
			Handle:    netlink.MakeHandle(0xffff, 0),
			Parent:    netlink.HANDLE_CLSACT,
		},
		QdiscType: "clsact",
	}
	err := netlink.QdiscAdd(qdisc)
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add clsact qdisc on ifindex %d: %w", ifindex, err)
	}
	return nil
}

func ferryFilter(h hook, fd int) *netlink.BpfFilter {
	return &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: h.ifindex,
			Parent:    clsactParent(h.dir),
			Handle:    clsactHandle,
			Priority:  clsactPriority,
			Protocol:  unix.ETH_P_ALL,
		},
		Fd:           fd,
		Name:         h.name,
		DirectAction: true,
	}
}

// attachClsact adds or atomically replaces ferry's cls_bpf filter on the hook.
func attachClsact(prog *ebpf.Program, h hook) error {
	if err := ensureClsact(h.ifindex); err != nil {
		return err
	}
	if err := netlink.FilterReplace(ferryFilter(h, prog.FD())); err != nil {
		return fmt.Errorf("replace cls_bpf %s filter on ifindex %d: %w", h.dir, h.ifindex, err)
	}
	return nil
}

// detachClsact deletes ferry's cls_bpf filter on the hook, if there is one.
func detachClsact(h hook) error {
	found, err := clsactAttached(h)
	if err != nil || !found {
		return err
	}
	if err := netlink.FilterDel(ferryFilter(h, 0)); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete cls_bpf %s filter on ifindex %d: %w", h.dir, h.ifindex, err)
	}
	return nil
}

func clsactAttached(h hook) (bool, error) {
	link, err := netlink.LinkByIndex(h.ifindex)
	if _, gone := err.(netlink.LinkNotFoundError); gone {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("find interface %d: %w", h.ifindex, err)
	}
	filters, err := netlink.FilterList(link, clsactParent(h.dir))
	if err != nil {
		// No clsact qdisc: nothing of ferry's can be there.
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, fmt.Errorf("list %s filters on ifindex %d: %w", h.dir, h.ifindex, err)
	}
	for _, f := range filters {
		a := f.Attrs()
		if a.Handle == clsactHandle && a.Priority == clsactPriority {
			return true, nil
		}
	}
	return false, nil
}
