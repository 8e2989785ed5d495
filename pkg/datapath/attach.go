package datapath

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
)

// AttachMode selects how programs are attached to interfaces.
type AttachMode string

// Attach modes. AttachAuto uses tcx where the kernel has it (6.6 and later)
// and cls_bpf filters on a clsact qdisc elsewhere.
const (
	AttachAuto   AttachMode = "auto"
	AttachTCX    AttachMode = "tcx"
	AttachClsact AttachMode = "clsact"
)

// ParseAttachMode checks a mode name from a config file or flag.
func ParseAttachMode(s string) (AttachMode, error) {
	switch m := AttachMode(s); m {
	case "":
		return AttachAuto, nil
	case AttachAuto, AttachTCX, AttachClsact:
		return m, nil
	default:
		return "", fmt.Errorf("invalid attach mode %q: use auto, tcx or clsact", s)
	}
}

// direction is a TC hook of an interface.
type direction bool

const (
	ingress direction = true
	egress  direction = false
)

func (d direction) String() string {
	if d == ingress {
		return "ingress"
	}
	return "egress"
}

func (d direction) tcxType() ebpf.AttachType {
	if d == ingress {
		return ebpf.AttachTCXIngress
	}
	return ebpf.AttachTCXEgress
}

// hook is one attachment of a ferry program.
type hook struct {
	ifindex int
	dir     direction
	name    string // cls_bpf filter name
	linkPin string // where the tcx link is pinned
}

// attach puts prog on the hook, replacing ferry's earlier program there in
// one step and leaving other programs and filters alone. After any number
// of calls the hook holds one ferry program.
func attach(prog *ebpf.Program, h hook, mode AttachMode) error {
	if mode == AttachClsact {
		if err := attachClsact(prog, h); err != nil {
			return err
		}
		// A tcx link from an earlier start in tcx mode would run first.
		return removeLinkPin(h.linkPin)
	}
	if err := attachTCX(prog, h); err != nil {
		return err
	}
	return detachClsact(h)
}

func attachTCX(prog *ebpf.Program, h hook) error {
	if l, err := link.LoadPinnedLink(h.linkPin, nil); err == nil {
		defer l.Close()
		if linkOnInterface(l, h.ifindex) {
			if err := l.Update(prog); err != nil {
				return fmt.Errorf("update tcx %s link on ifindex %d: %w", h.dir, h.ifindex, err)
			}
			return nil
		}
		// The interface went away (a pod veth with a reused name): start over.
		if err := l.Unpin(); err != nil {
			return fmt.Errorf("unpin stale link %s: %w", h.linkPin, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("load pinned link %s: %w", h.linkPin, err)
	}

	// ferry's programs end the hook's run: they pass, redirect or drop,
	// and never hand a packet on to the next program. So ferry goes last,
	// and the programs attached before it still see every packet. An update
	// of the pinned link above keeps the place, after any number of starts.
	l, err := link.AttachTCX(link.TCXOptions{
		Interface: h.ifindex,
		Program:   prog,
		Attach:    h.dir.tcxType(),
		Anchor:    link.Tail(),
	})
	if err != nil {
		return fmt.Errorf("attach tcx %s on ifindex %d: %w", h.dir, h.ifindex, err)
	}
	defer l.Close()
	if err := pinAtomically(h.linkPin, l.Pin); err != nil {
		return err
	}
	return nil
}

func linkOnInterface(l link.Link, ifindex int) bool {
	info, err := l.Info()
	if err != nil {
		return false
	}
	tcx := info.TCX()
	return tcx != nil && int(tcx.Ifindex) == ifindex
}

// removeLinkPin detaches the link pinned at path and deletes the pin. The
// explicit detach matters: dropping the last reference by unlinking the pin
// releases the link only once the kernel evicts the inode, some time later.
func removeLinkPin(path string) error {
	l, err := link.LoadPinnedLink(path, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err == nil {
		defer l.Close()
		if err := l.Detach(); err != nil && !errors.Is(err, ebpf.ErrNotSupported) {
			return fmt.Errorf("detach link %s: %w", path, err)
		}
	}
	err = os.Remove(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove link pin %s: %w", path, err)
	}
	return nil
}

// tcxSupported reports whether the kernel attaches tcx links, by trying on
// the given interface's ingress with prog and detaching again.
func tcxSupported(prog *ebpf.Program, ifindex int) bool {
	l, err := link.AttachTCX(link.TCXOptions{
		Interface: ifindex,
		Program:   prog,
		Attach:    ebpf.AttachTCXIngress,
		Anchor:    link.Tail(),
	})
	if err != nil {
		return !errors.Is(err, ebpf.ErrNotSupported)
	}
	_ = l.Close()
	return true
}

// resolveMode turns AttachAuto into the mode this kernel supports.
func resolveMode(mode AttachMode, prog *ebpf.Program, ifindex int) AttachMode {
	if mode != AttachAuto {
		return mode
	}
	if tcxSupported(prog, ifindex) {
		return AttachTCX
	}
	return AttachClsact
}

// AttachUplink attaches the uplink programs to ifindex and returns the mode
// used, which callers pass on to the CNI plugin through the node settings.
func (d *Datapath) AttachUplink(ifindex int, mode AttachMode) (AttachMode, error) {
	mode = resolveMode(mode, d.uplinkIngress, ifindex)
	hooks := []struct {
		prog *ebpf.Program
		h    hook
	}{
		{d.uplinkIngress, hook{ifindex, ingress, "ferry_uplink_in",
			filepath.Join(d.Dir, linksDir, linkUplinkIngress)}},
		{d.uplinkEgress, hook{ifindex, egress, "ferry_uplink_out",
			filepath.Join(d.Dir, linksDir, linkUplinkEgress)}},
	}
	for _, x := range hooks {
		if err := attach(x.prog, x.h, mode); err != nil {
			return mode, err
		}
	}
	return mode, nil
}

// UpdatePods attaches the program that Load pinned to the veth of every
// local pod in mode. An attachment of the same mode is replaced in one step.
// One of the other mode is removed after the new one is in place, so an
// upgrade or a change of the pod attach mode reaches existing pods without
// a gap. Endpoints whose veth is gone are left to CNI DEL and GC.
//
// In clsact mode, a veth whose ingress qdisc is of another kind, such as
// the bandwidth plugin's, gets a tcx link instead, which runs before that
// qdisc's filters. UpdatePods returns the names of those veths.
func (d *Datapath) UpdatePods(mode AttachMode) ([]string, error) {
	eps, err := d.Endpoints()
	if err != nil {
		return nil, err
	}
	var (
		errs  []error
		onTCX []string
	)
	done := map[int]bool{}
	for _, ep := range eps {
		if done[ep.IfIndex] {
			continue // a pod with several addresses
		}
		done[ep.IfIndex] = true
		l, err := netlink.LinkByIndex(ep.IfIndex)
		if err != nil {
			var notFound netlink.LinkNotFoundError
			if !errors.As(err, &notFound) {
				errs = append(errs, fmt.Errorf("find veth %d of pod %s: %w", ep.IfIndex, ep.IP,
					err))
			}
			continue
		}
		name := l.Attrs().Name
		h := podHook(d.Dir, name, ep.IfIndex)
		err = attach(d.fromPod, h, mode)
		if mode == AttachClsact && errors.Is(err, errOtherIngressQdisc) {
			if tcxErr := attach(d.fromPod, h, AttachTCX); tcxErr == nil {
				onTCX = append(onTCX, name)
				continue
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("attach pod program to %s of pod %s: %w", name,
				ep.IP, err))
		}
	}
	return onTCX, errors.Join(errs...)
}

func podHook(dir, hostIfName string, ifindex int) hook {
	return hook{ifindex, ingress, "ferry_from_pod",
		filepath.Join(dir, linksDir, podLinkName(hostIfName))}
}

// AttachPod attaches the pinned pod program to the host side of a pod's veth.
func AttachPod(dir, hostIfName string, ifindex int, mode AttachMode) error {
	prog, err := ebpf.LoadPinnedProgram(filepath.Join(dir, progsDir, progFromPod), nil)
	if err != nil {
		if isNotExist(err) {
			return fmt.Errorf("%w: no pod program pinned under %s", ErrNotLoaded, dir)
		}
		return fmt.Errorf("load pinned pod program: %w", err)
	}
	defer prog.Close()
	return attach(prog, podHook(dir, hostIfName, ifindex), mode)
}

// DetachPod removes the pod program's tcx link of a pod's veth. A cls_bpf
// filter needs no removal: it goes with the veth.
func DetachPod(dir, hostIfName string) error {
	return removeLinkPin(filepath.Join(dir, linksDir, podLinkName(hostIfName)))
}

// PodAttachment returns the mode in which ferry's pod program is attached to
// ifindex, or "" when it is not. A pod can be in the other mode than the
// node's: one that ADD attached while ferryd started in a new mode, or one
// that UpdatePods kept on tcx.
func PodAttachment(dir, hostIfName string, ifindex int) (AttachMode, error) {
	for _, mode := range []AttachMode{AttachTCX, AttachClsact} {
		ok, err := PodAttached(dir, hostIfName, ifindex, mode)
		if err != nil {
			return "", err
		}
		if ok {
			return mode, nil
		}
	}
	return "", nil
}

// PodAttached reports whether ferry's pod program is attached to ifindex in
// mode.
func PodAttached(dir, hostIfName string, ifindex int, mode AttachMode) (bool, error) {
	if mode == AttachClsact {
		return clsactAttached(hook{ifindex: ifindex, dir: ingress, name: "ferry_from_pod"})
	}
	l, err := link.LoadPinnedLink(filepath.Join(dir, linksDir, podLinkName(hostIfName)), nil)
	if err != nil {
		if isNotExist(err) {
			return false, nil
		}
		return false, fmt.Errorf("load pinned pod link: %w", err)
	}
	defer l.Close()
	return linkOnInterface(l, ifindex), nil
}
