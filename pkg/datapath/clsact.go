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

// errOtherIngressQdisc means that an interface has an ingress qdisc of
// another kind than clsact at clsact's handle, such as the one the CNI
// bandwidth plugin adds with a filter that redirects every packet to an ifb
// device. ferry's filter there would run after that redirect and see nothing.
var errOtherIngressQdisc = errors.New("the interface has an ingress qdisc that is not clsact")

// ensureClsact adds a clsact qdisc to ifindex unless it has one. It returns
// an error wrapping errOtherIngressQdisc when another kind holds the place.
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
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add clsact qdisc on ifindex %d: %w", ifindex, err)
	}
	kind, err := ingressQdiscKind(ifindex)
	if err != nil {
		return err
	}
	if kind != "clsact" {
		return fmt.Errorf("%w: ifindex %d has a qdisc of kind %s at ffff:", errOtherIngressQdisc,
			ifindex, kind)
	}
	return nil
}

// ingressQdiscKind returns the kind of the qdisc at ifindex's ingress handle
// ffff:, or "" when there is none.
func ingressQdiscKind(ifindex int) (string, error) {
	link, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return "", fmt.Errorf("find interface %d: %w", ifindex, err)
	}
	qdiscs, err := netlink.QdiscList(link)
	if err != nil {
		return "", fmt.Errorf("list qdiscs of ifindex %d: %w", ifindex, err)
	}
	for _, q := range qdiscs {
		if q.Attrs().Handle == netlink.MakeHandle(0xffff, 0) {
			return q.Type(), nil
		}
	}
	return "", nil
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
	found, err := hasFerryFilter(h)
	if err != nil || !found {
		return err
	}
	if err := netlink.FilterDel(ferryFilter(h, 0)); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete cls_bpf %s filter on ifindex %d: %w", h.dir, h.ifindex, err)
	}
	return nil
}

// clsactAttached reports whether ferry's cls_bpf filter is on the hook, on a
// clsact qdisc. On an ingress qdisc of another kind, ferry's filter may run
// after one that takes every packet away, so it does not count.
func clsactAttached(h hook) (bool, error) {
	found, err := hasFerryFilter(h)
	if err != nil || !found || h.dir == egress {
		return found, err
	}
	kind, err := ingressQdiscKind(h.ifindex)
	return kind == "clsact", err
}

// hasFerryFilter reports whether the hook holds a filter with ferry's
// priority and handle.
func hasFerryFilter(h hook) (bool, error) {
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
