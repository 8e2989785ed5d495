package datapath

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"

	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
)

// HookState is the attachment of ferry's program on one hook of the uplink.
type HookState struct {
	// Hook is uplink_ingress or uplink_egress.
	Hook    string
	IfIndex int
	Mode    AttachMode
	// Attached reports whether ferry's program is on the hook.
	Attached bool
	// Programs counts the BPF programs on the hook in Mode, ferry's included.
	Programs int
	// Position is the place of ferry's program in the hook's run order,
	// from 0; -1 when it is not attached.
	Position int
}

// PodHooks summarises the attachment of the pod program on the local pods.
type PodHooks struct {
	Mode      AttachMode // the CNI plugin's attach mode for new pods
	Endpoints int
	Attached  int
	// AttachedTCX counts the attached pods that have a tcx link, in either
	// mode of the node: a pod keeps one beside a foreign ingress qdisc.
	AttachedTCX int
	// Missing lists the endpoints whose veth lacks ferry's program.
	Missing []netip.Addr
}

// Hooks reads the attachment state of ferry's programs on this node's
// uplink and pod veths, from the settings that ferryd wrote and the pins
// under dir. It works in the calling thread's network namespace, which must
// be the node's.
func (m *Maps) Hooks(dir string) ([]HookState, PodHooks, error) {
	s, err := m.Settings()
	if err != nil {
		return nil, PodHooks{}, err
	}
	mode := s.UplinkAttachMode()
	var states []HookState
	for _, h := range []hook{
		{s.UplinkIfIndex, ingress, "ferry_uplink_in", filepath.Join(dir, linksDir, linkUplinkIngress)},
		{s.UplinkIfIndex, egress, "ferry_uplink_out", filepath.Join(dir, linksDir, linkUplinkEgress)},
	} {
		st, err := hookState(h, mode)
		if err != nil {
			return nil, PodHooks{}, err
		}
		st.Hook = "uplink_" + h.dir.String()
		states = append(states, st)
	}

	eps, err := m.Endpoints()
	if err != nil {
		return nil, PodHooks{}, err
	}
	pods := PodHooks{Mode: s.PodAttachMode(), Endpoints: len(eps)}
	for _, ep := range eps {
		name := ""
		if l, err := netlink.LinkByIndex(ep.IfIndex); err == nil {
			name = l.Attrs().Name
		}
		ok := false
		if name != "" {
			mode, err := PodAttachment(dir, name, ep.IfIndex)
			if err != nil {
				return nil, PodHooks{}, err
			}
			ok = mode != ""
			if mode == AttachTCX {
				pods.AttachedTCX++
			}
		}
		if ok {
			pods.Attached++
		} else {
			pods.Missing = append(pods.Missing, ep.IP)
		}
	}
	// The endpoints map iterates in hash order; callers print the list.
	slices.SortFunc(pods.Missing, func(a, b netip.Addr) int { return a.Compare(b) })
	return states, pods, nil
}

func hookState(h hook, mode AttachMode) (HookState, error) {
	st := HookState{IfIndex: h.ifindex, Mode: mode, Position: -1}
	if mode == AttachClsact {
		found, err := clsactAttached(h)
		if err != nil {
			return st, err
		}
		st.Attached = found
		st.Programs, st.Position, err = clsactOrder(h)
		return st, err
	}

	res, err := link.QueryPrograms(link.QueryOptions{Target: h.ifindex, Attach: h.dir.tcxType()})
	if err != nil {
		return st, fmt.Errorf("query tcx %s programs of ifindex %d: %w", h.dir, h.ifindex, err)
	}
	st.Programs = len(res.Programs)
	l, err := link.LoadPinnedLink(h.linkPin, nil)
	if isNotExist(err) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("load pinned link %s: %w", h.linkPin, err)
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		return st, fmt.Errorf("read link %s: %w", h.linkPin, err)
	}
	if tcx := info.TCX(); tcx == nil || int(tcx.Ifindex) != h.ifindex {
		return st, nil
	}
	st.Attached = true
	for i, p := range res.Programs {
		if p.ID == info.Program {
			st.Position = i
		}
	}
	return st, nil
}

// clsactOrder returns the number of BPF filters on the hook and the place
// of ferry's among them in the order the kernel runs them.
func clsactOrder(h hook) (int, int, error) {
	l, err := netlink.LinkByIndex(h.ifindex)
	if err != nil {
		return 0, -1, fmt.Errorf("find interface %d: %w", h.ifindex, err)
	}
	filters, err := netlink.FilterList(l, clsactParent(h.dir))
	if err != nil {
		// No clsact qdisc: no filters.
		return 0, -1, nil
	}
	count, position := 0, -1
	for _, f := range filters {
		if _, ok := f.(*netlink.BpfFilter); !ok {
			continue
		}
		a := f.Attrs()
		if a.Handle == clsactHandle && a.Priority == clsactPriority {
			position = count
		}
		count++
	}
	return count, position, nil
}
