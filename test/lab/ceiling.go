package lab

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Addresses of the two ends of the ceiling's veth pair, a /30 of their own that no other
// namespace of the lab routes.
var (
	ceilingIPA = netip.MustParsePrefix("10.254.0.1/30")
	ceilingIPB = netip.MustParsePrefix("10.254.0.2/30")
)

// Ceiling is the fastest path that two pods could have: two namespaces joined by a single
// veth pair, with no bridge, routing, netfilter rule or BPF program between them.
// Benchmarks use it as the upper bound for a dataplane.
type Ceiling struct {
	// A and B are the namespaces <lab>-ceiling-a and <lab>-ceiling-b.
	A, B *Namespace
	// IPA and IPB are the addresses of eth0 in A and in B.
	IPA, IPB netip.Addr
}

// AddCeiling creates the namespaces of a Ceiling and the veth pair between them. Their
// names are reserved as pod names, so no pod can take them, and Close removes them with
// the rest of the lab.
func (l *Lab) AddCeiling(ctx context.Context) (*Ceiling, error) {
	names := []string{"ceiling-a", "ceiling-b"}
	for _, name := range names {
		if err := l.reservePodName(name); err != nil {
			return nil, fmt.Errorf("add ceiling to lab %s: %w", l.Name, err)
		}
	}
	a, err := l.newNamespace(ctx, names[0])
	if err != nil {
		return nil, err
	}
	b, err := l.newNamespace(ctx, names[1])
	if err != nil {
		return nil, err
	}

	peerFD, err := netns.GetFromPath(b.NSPath)
	if err != nil {
		return nil, fmt.Errorf("open namespace %s: %w", b.NSPath, err)
	}
	defer peerFD.Close()
	err = a.withHandle(func(h *netlink.Handle) error {
		veth := netlink.NewVeth(netlink.LinkAttrs{Name: "eth0"})
		veth.PeerName = "eth0"
		veth.PeerNamespace = netlink.NsFd(int(peerFD))
		if err := h.LinkAdd(veth); err != nil {
			return fmt.Errorf("create veth eth0 (%s) <-> eth0 (%s): %w", a, b, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}

	ends := []struct {
		ns   *Namespace
		addr netip.Prefix
	}{{a, ceilingIPA}, {b, ceilingIPB}}
	for _, end := range ends {
		err := end.ns.withHandle(func(h *netlink.Handle) error {
			if err := addAddrs(h, "eth0", end.addr); err != nil {
				return err
			}
			return setUp(h, "eth0")
		})
		if err != nil {
			return nil, fmt.Errorf("configure eth0 of %s: %w", end.ns, err)
		}
	}
	l.logf("lab %s: ceiling %s (%v) <-> %s (%v)", l.Name, a, ceilingIPA.Addr(), b,
		ceilingIPB.Addr())
	return &Ceiling{A: a, B: b, IPA: ceilingIPA.Addr(), IPB: ceilingIPB.Addr()}, nil
}
